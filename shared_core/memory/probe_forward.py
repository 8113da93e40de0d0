"""The query pass written out for Llama-style Hugging Face models: no cache copies, no masks.

``attention_probe.entry_mass`` runs the model's own forward over a fork of the memory's cache
with hooks on the selected layers. That works for any cache, but per query and layer it
concatenates the whole cache with the query's keys and values, repeats them for grouped-query
attention and builds a causal mask over all the entries. Here the few query tokens run layer
by layer against the memory's tensors as they are:

- per layer one product of the query rows (every query head of a KV head stacked as rows)
  with the memory's keys ``[kv, rows, entries]``, one with the tokens before the question
  (the *prior*, see below) and one causal product among the query's own tokens; one softmax
  over the three, and the values read the same way. Nothing of size entries x entries, and
  the memory's tensors are read, never copied or written;
- the selected heads' probabilities on the entries are taken from that softmax (the same
  numbers eager attention gives);
- the tokens after the question (the assistant header) are dropped: with causal attention
  they cannot change the question's rows;
- the chat frame before the question is the same for every query, so its keys and values
  (``Prior``) are computed once per memory state and reused;
- several questions (the query and ``"N/A"``) can run as one batch;
- the last selected layer computes scores only (no values, output projection or MLP).

Supported: ``LlamaDecoderLayer``, ``Qwen2DecoderLayer`` and ``MistralDecoderLayer`` from
transformers, without a sliding window, in eval mode (``supports_direct``); anything else
takes the hook path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from shared_core.memory.cpu_threads import pass_threads
from shared_core.memory.positions import rotate_half

Head = tuple[int, int]
Rows = tuple[int, int]
_LAYERS = {"LlamaDecoderLayer", "Qwen2DecoderLayer", "MistralDecoderLayer"}


@dataclass(frozen=True)
class Prior:
    """Tokens after the memory that every query starts with, with their keys and values.

    ``keys``/``values`` per layer up to the last selected one: ``[kv heads, tokens, head_dim]``,
    keys rotated. Query-independent: computed once per memory state.
    """

    ids: tuple[int, ...]
    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]

    def head(self, n: int) -> Prior:
        """The first ``n`` tokens (causal: their keys and values do not depend on the rest)."""
        if n == len(self.ids):
            return self
        return Prior(
            self.ids[:n],
            tuple(k[:, :n] for k in self.keys),
            tuple(v[:, :n] for v in self.values),
        )


def supports_direct(model: Any) -> bool:
    """Whether ``model`` is a transformers Llama/Qwen2/Mistral without a sliding window."""
    if getattr(model, "training", False):
        return False
    try:
        decoder = model.get_decoder()
    except (AttributeError, NotImplementedError):
        return False
    layers = getattr(decoder, "layers", None)
    if layers is None or not all(hasattr(decoder, n) for n in ("embed_tokens", "rotary_emb")):
        return False
    cfg = model.config
    if getattr(cfg, "model_type", "") == "mistral" and getattr(cfg, "sliding_window", None):
        return False
    for layer in layers:
        cls = type(layer)
        if cls.__name__ not in _LAYERS or not cls.__module__.startswith("transformers.models."):
            return False
        if getattr(layer.self_attn, "sliding_window", None) is not None:
            return False
    return True


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def make_prior(
    model: Any,
    keys: Sequence[torch.Tensor],
    values: Sequence[torch.Tensor],
    start_position: int,
    ids: Sequence[int],
    last_layer: int,
) -> Prior:
    """Keys and values of ``ids`` (at ``start_position``, after the memory) up to ``last_layer``."""
    run = _Pass(model, keys, values, start_position, None, [list(ids)], last_layer, {})
    return run.forward(capture=True)[1]


def direct_masses(
    model: Any,
    keys: Sequence[torch.Tensor],
    values: Sequence[torch.Tensor],
    start_position: int,
    seqs: Sequence[tuple[Sequence[int], Rows]],
    heads: Sequence[Head],
    prior: Prior | None = None,
    *,
    keep_prior: bool = True,
) -> tuple[list[torch.Tensor], Prior | None]:
    """Mean attention of each sequence's ``rows`` onto the memory entries, per head in ``heads``.

    ``keys``/``values`` are the memory's per layer ``[1, kv, entries, head_dim]`` (read only);
    each of ``seqs`` is the full token ids after the memory and the ``[first, last)`` rows to
    average, as ``entry_mass`` takes them. Tokens the sequences share before their rows run
    once (``prior``: made here when not given and ``keep_prior``, and returned for reuse;
    without it they run inside each sequence). Returns one
    ``[len(heads), entries]`` float32 tensor per sequence, and the prior.
    """
    last = max(layer for layer, _ in heads)
    shared = min(a for _, (a, _) in seqs)
    for ids, _ in seqs[1:]:
        shared = min(shared, _common(seqs[0][0], ids))
    if prior is not None and len(prior.ids) >= 1 and len(prior.keys) > last:
        shared = min(shared, *(_common(prior.ids, ids) for ids, _ in seqs))
        prior = prior.head(shared) if shared > 0 else None
    elif shared > 0 and keep_prior:
        prior = make_prior(model, keys, values, start_position, seqs[0][0][:shared], last)
    else:
        prior = None
    n = len(prior.ids) if prior is not None else 0
    tails = [list(ids[n:b]) for ids, (_, b) in seqs]
    rows = [(a - n, b - n) for _, (a, b) in seqs]
    by_layer: dict[int, list[int]] = {}
    for i, (layer, _) in enumerate(heads):
        by_layer.setdefault(layer, []).append(i)
    run = _Pass(model, keys, values, start_position + n, prior, tails, last, by_layer)
    run.heads, run.rows = [h for _, h in heads], rows
    masses, _ = run.forward(capture=False)
    return masses, prior


class _Pass:
    """One batched forward of right-padded token sequences over the memory (and a prior)."""

    def __init__(
        self,
        model: Any,
        keys: Sequence[torch.Tensor],
        values: Sequence[torch.Tensor],
        start: int,
        prior: Prior | None,
        batch: list[list[int]],
        last: int,
        by_layer: dict[int, list[int]],
    ) -> None:
        self.model, self.keys, self.values = model, keys, values
        self.start, self.prior, self.batch = start, prior, batch
        self.last, self.by_layer = last, by_layer
        self.heads: list[int] = []
        self.rows: list[Rows] = []
        cfg = model.config
        self.n_heads = int(cfg.num_attention_heads)
        self.n_kv = int(getattr(cfg, "num_key_value_heads", None) or self.n_heads)
        self.group = self.n_heads // self.n_kv

    def forward(self, capture: bool) -> tuple[list[torch.Tensor], Prior | None]:
        decoder = self.model.get_decoder()
        device = self.keys[0].device
        width = max(len(t) for t in self.batch)
        padded = [t + [t[-1]] * (width - len(t)) for t in self.batch]  # right pad: never read
        entries = int(self.keys[0].shape[-2])
        out = [torch.zeros(len(self.heads), entries) for _ in self.batch]
        kept_k: list[torch.Tensor] | None = [] if capture else None
        kept_v: list[torch.Tensor] | None = [] if capture else None
        with torch.inference_mode(), pass_threads(device):
            hidden = decoder.embed_tokens(torch.tensor(padded, device=device))
            pos = torch.arange(self.start, self.start + width, device=device)[None]
            cos, sin = decoder.rotary_emb(hidden, pos)
            rope = (cos[:, None], sin[:, None])  # [1, 1, width, head_dim]
            for i in range(self.last + 1):
                hidden = self._layer(decoder.layers[i], i, hidden, rope, out, kept_k, kept_v)
        prior = None
        if kept_k is not None and kept_v is not None:
            prior = Prior(tuple(self.batch[0]), tuple(kept_k), tuple(kept_v))
        return out, prior

    def _layer(
        self,
        layer: Any,
        i: int,
        hidden: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        out: list[torch.Tensor],
        kept_k: list[torch.Tensor] | None,
        kept_v: list[torch.Tensor] | None,
    ) -> torch.Tensor:
        attn = layer.self_attn
        b, width, _ = hidden.shape
        kv, g = self.n_kv, self.group
        x = layer.input_layernorm(hidden)
        cos, sin = rope
        q = attn.q_proj(x).view(b, width, self.n_heads, -1).transpose(1, 2)
        k = attn.k_proj(x).view(b, width, kv, -1).transpose(1, 2)
        v = attn.v_proj(x).view(b, width, kv, -1).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if kept_k is not None and kept_v is not None:
            kept_k.append(k[0])
            kept_v.append(v[0])
        d = q.shape[-1]
        rows = b * g * width
        # [kv, batch * group * width, d]: the query heads that share a KV head, stacked as rows
        qf = q.reshape(b, kv, g, width, d).transpose(0, 1).reshape(kv, rows, d).float()
        own_k = k.transpose(0, 1).float()  # [kv, b, width, d]
        own_v = v.transpose(0, 1).float()
        mem_k = self.keys[i][0].float()  # [kv, entries, d] (a view for a float32 memory)
        scores = [torch.matmul(qf, mem_k.transpose(-1, -2))]
        sides: list[torch.Tensor] = []
        if self.prior is not None:
            sides.append(self.prior.keys[i].float())
            scores.append(torch.matmul(qf, sides[0].transpose(-1, -2)))
        causal = torch.ones(width, width, dtype=torch.bool, device=qf.device).triu(1)
        own = torch.matmul(qf.view(kv, b, g * width, d), own_k.transpose(-1, -2))
        own = own.masked_fill_(causal.repeat(g, 1), float("-inf")).view(kv, rows, width)
        scores.append(own)
        peak = torch.stack([s.amax(dim=-1) for s in scores]).amax(dim=0) * attn.scaling
        total = torch.zeros_like(peak)
        for s in scores:  # in place: exp(scaling * s - peak), the softmax's numerators
            s.mul_(attn.scaling).sub_(peak[..., None]).exp_()
            total += s.sum(dim=-1)
        for idx in self.by_layer.get(i, ()):
            head = self.heads[idx]
            for n, (a, z) in enumerate(self.rows):
                first = (n * g + head % g) * width
                probs = scores[0][head // g, first + a : first + z]
                share = probs / total[head // g, first + a : first + z, None]
                out[n][idx] = share.mean(dim=0).cpu()
        if i == self.last:
            return hidden
        mixed = torch.matmul(scores[0], self.values[i][0].float())
        if self.prior is not None:
            mixed += torch.matmul(scores[1], self.prior.values[i].float())
        mixed += torch.matmul(scores[-1].view(kv, b, g * width, width), own_v).view(kv, rows, d)
        mixed /= total[..., None]
        mixed = mixed.view(kv, b, g, width, d).permute(1, 3, 0, 2, 4).reshape(b, width, -1)
        hidden = hidden + attn.o_proj(mixed.to(hidden.dtype))
        return hidden + layer.mlp(layer.post_attention_layernorm(hidden))
