"""The decoder: a Qwen2/Mistral transformer whose beacon tokens have their own q/k/v.

One call runs one window step: ``T`` new entries (raw tokens and beacons) attend to ``M``
memory entries and causally to each other. Keys come in and go out *before* RoPE; every step
rotates all keys by their index ``0..M+T-1`` in the memory (queries take the last ``T``).
Parameter names match the checkpoints' ``state_dict``, so the weights load without mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from shared_core.memory.beacon.config import BeaconConfig

KV = tuple[torch.Tensor, torch.Tensor]
#: Sees one layer's rotated queries ``[1, heads, T, d]`` and keys ``[1, kv_heads, M+T, d]``
#: before attention (the retrieval heads' query pass, ``beacon/attention.py``).
Observer = Callable[[torch.Tensor, torch.Tensor], None]


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in fp32, scaled in the input dtype."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_tables(
    n: int, head_dim: int, theta: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos``/``sin`` ``[n, head_dim]`` (fp32) for positions ``0..n-1``."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    freqs = torch.arange(n, device=device).float()[:, None] * inv[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply RoPE to ``x [..., n, d]`` with tables ``[n, d]`` (in ``x``'s dtype)."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    half = x.shape[-1] // 2
    turned = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + turned * sin


@dataclass
class StepOptions:
    """Switches for one model: attention kernel and the two ablations the tests use."""

    attention: str = "sdpa"  # "sdpa" | "eager" | "flash_attention_2"
    use_beacon_params: bool = True  # False: beacons use the ordinary q/k/v (ablation)
    cache_rotated_keys: bool = False  # True: keys are cached after RoPE (ablation)


@dataclass(frozen=True)
class LayerStep:
    """What every layer of one step shares: beacon rows, the rotary tables, the layer's probe."""

    beacons: torch.Tensor | None  # row indices of beacon tokens
    cos: torch.Tensor
    sin: torch.Tensor
    observe: Observer | None = None


class BeaconAttention(nn.Module):
    """Self-attention with a second set of q/k/v projections for beacon tokens."""

    def __init__(self, cfg: BeaconConfig, options: StepOptions) -> None:
        super().__init__()
        d, hd, bias = cfg.hidden_size, cfg.head_dim, cfg.attention_bias
        self.heads, self.kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, hd
        self.q_proj = nn.Linear(d, cfg.num_heads * hd, bias=bias)
        self.k_proj = nn.Linear(d, cfg.num_kv_heads * hd, bias=bias)
        self.v_proj = nn.Linear(d, cfg.num_kv_heads * hd, bias=bias)
        self.o_proj = nn.Linear(cfg.num_heads * hd, d, bias=False)
        self.beacon_q_proj = nn.Linear(d, cfg.num_heads * hd, bias=bias)
        self.beacon_k_proj = nn.Linear(d, cfg.num_kv_heads * hd, bias=bias)
        self.beacon_v_proj = nn.Linear(d, cfg.num_kv_heads * hd, bias=bias)
        self.options = options

    def _project(self, h: torch.Tensor, beacons: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        q, k, v = self.q_proj(h), self.k_proj(h), self.v_proj(h)
        if beacons is not None and self.options.use_beacon_params:
            rows = h[:, beacons]
            q[:, beacons] = self.beacon_q_proj(rows)
            k[:, beacons] = self.beacon_k_proj(rows)
            v[:, beacons] = self.beacon_v_proj(rows)
        return q, k, v

    def forward(self, h: torch.Tensor, past: KV | None, step: LayerStep) -> tuple[torch.Tensor, KV]:
        """``h [1,T,D]`` on top of ``past``; returns the output and the new pre-RoPE K/V."""
        b, t, _ = h.shape
        q, k, v = self._project(h, step.beacons)
        q = q.view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        m = past[0].shape[-2] if past is not None else 0
        cos, sin = step.cos.to(h.device), step.sin.to(h.device)
        if self.options.cache_rotated_keys:  # ablation: the memory holds rotated keys
            k = rotate(k, cos[m:], sin[m:])
            keys = torch.cat([past[0], k], dim=-2) if past is not None else k
        else:
            keys = torch.cat([past[0], k], dim=-2) if past is not None else k
            keys = rotate(keys, cos, sin)
        values = torch.cat([past[1], v], dim=-2) if past is not None else v
        q = rotate(q, cos[m:], sin[m:])
        if step.observe is not None:
            step.observe(q, keys)
        out = self._attend(q, keys, values, m)
        out = out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim)
        return self.o_proj(out), (k, v)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, m: int) -> torch.Tensor:
        """Memory columns fully visible, causal inside the chunk (bottom-right aligned)."""
        t = q.shape[-2]
        kind = self.options.attention
        if kind == "flash_attention_2":
            from flash_attn import flash_attn_func

            out = flash_attn_func(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=True
            )
            return out.transpose(1, 2)
        groups = self.heads // self.kv_heads
        if kind == "eager":
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
            scores = (q @ k.transpose(-1, -2)) / self.head_dim**0.5
            if t > 1:
                scores = scores.masked_fill(~allowed_mask(t, m, q.device), float("-inf"))
            probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
            return probs @ v
        if t == 1:  # one new entry sees everything: no mask, GQA in the kernel
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=groups > 1)
        # A lower-right causal bias is exactly "memory visible, causal in the chunk" and keeps
        # the fused kernels (no [T, M+T] mask, no materialised scores); K/V heads are expanded
        # because fused kernels with a bias do not all take GQA.
        from torch.nn.attention.bias import causal_lower_right

        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(t, m + t))


def allowed_mask(t: int, m: int, device: torch.device) -> torch.Tensor:
    """``[T, M+T]`` bool: row i may see every memory column and chunk columns ``<= i``."""
    cols = torch.arange(m + t, device=device)
    rows = torch.arange(t, device=device)[:, None] + m
    return cols[None, :] <= rows


class MLP(nn.Module):
    def __init__(self, cfg: BeaconConfig) -> None:
        super().__init__()
        d, i = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = nn.Linear(d, i, bias=False)
        self.up_proj = nn.Linear(d, i, bias=False)
        self.down_proj = nn.Linear(i, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: BeaconConfig, options: StepOptions) -> None:
        super().__init__()
        self.self_attn = BeaconAttention(cfg, options)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, h: torch.Tensor, past: KV | None, step: LayerStep) -> tuple[torch.Tensor, KV]:
        attn, kv = self.self_attn(self.input_layernorm(h), past, step)
        h = h + attn
        return h + self.mlp(self.post_attention_layernorm(h)), kv


class BeaconDecoder(nn.Module):
    """Embeddings (raw and beacon), the layers and the final norm."""

    def __init__(self, cfg: BeaconConfig, options: StepOptions) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.beacon_embed_tokens = nn.Embedding(1, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, options) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


@dataclass
class StepOutput:
    logits: torch.Tensor | None  # [1, rows, vocab] (fp32) for the requested rows
    kv: list[KV]  # per layer, the step's K (pre-RoPE) and V, [1, kv_heads, T, head_dim]
    hidden_states: list[torch.Tensor] | None = None


class BeaconForCausalLM(nn.Module):
    """The whole model; ``step`` runs one window step against a memory."""

    def __init__(self, cfg: BeaconConfig, options: StepOptions | None = None) -> None:
        super().__init__()
        self.config = cfg
        self.options = options or StepOptions()
        self.model = BeaconDecoder(cfg, self.options)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self._tables: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    def _rope(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Tables for ``n`` positions, sliced from a cached table that doubles as it grows."""
        key = (str(device), 0)
        cached = self._tables.get(key)
        if cached is None or cached[0].shape[0] < n:
            size = max(n, 2 * cached[0].shape[0] if cached else 1024)
            cached = rope_tables(size, self.config.head_dim, self.config.rope_theta, device)
            self._tables[key] = cached
        return cached[0][:n], cached[1][:n]

    def embed(self, ids: torch.Tensor, beacons: torch.Tensor | None) -> torch.Tensor:
        """Raw ids through ``embed_tokens``; beacon slots get the beacon embedding."""
        vocab = self.config.vocab_size
        h = self.model.embed_tokens(ids.clamp(max=vocab - 1))
        if beacons is not None:
            h[:, beacons] = self.model.beacon_embed_tokens.weight[0].to(h.dtype)
        return h

    def step(
        self,
        ids: torch.Tensor,
        beacons: torch.Tensor | None = None,
        past: Sequence[KV] | None = None,
        *,
        logit_rows: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        observe: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
        last_layer: int | None = None,
    ) -> StepOutput:
        """Run ``ids [1,T]`` on top of ``past`` (per layer pre-RoPE K/V of ``M`` entries).

        ``logit_rows`` picks the rows whose logits are returned (``None``: none).
        ``observe(layer, q, keys)`` sees each layer's rotated queries and keys (a probe);
        ``last_layer`` stops after that layer (then no logits and ``kv`` holds fewer layers).
        """
        h = self.embed(ids.to(self.device), beacons)
        m = past[0][0].shape[-2] if past else 0
        cos, sin = self._rope(m + ids.shape[-1], h.device)
        hidden = [h] if output_hidden_states else None
        kv: list[KV] = []
        for i, layer in enumerate(self.model.layers):
            seen = None if observe is None else _at_layer(observe, i)
            h, layer_kv = layer(h, past[i] if past else None, LayerStep(beacons, cos, sin, seen))
            kv.append(layer_kv)
            if last_layer is not None and i >= last_layer:
                return StepOutput(logits=None, kv=kv)
            if hidden is not None and i < len(self.model.layers) - 1:
                hidden.append(h)
        logits = None
        if logit_rows is not None or hidden is not None:
            h = self.model.norm(h)
            if hidden is not None:
                hidden.append(h)
            if logit_rows is not None:
                h = h[:, logit_rows.to(h.device)]
                logits = self.lm_head(h.to(self.lm_head.weight.device)).float()
        return StepOutput(logits=logits, kv=kv, hidden_states=hidden)


def _at_layer(observe: Callable[[int, torch.Tensor, torch.Tensor], None], layer: int) -> Observer:
    return lambda q, keys: observe(layer, q, keys)
