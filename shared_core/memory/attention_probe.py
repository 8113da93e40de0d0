"""One query pass over a memory: the attention mass selected heads put on each kept entry.

The query's tokens (framed as the memory's prompts are) run once over a fork of the memory's
cache. For the selected layers a pre-hook on the attention module takes the query's hidden
states and rotary embedding, and a post-hook, once the layer has appended the query's keys to
the fork, computes ``softmax(q . k / sqrt(d))`` for the selected query heads only (GQA: query
head ``h`` reads KV head ``h // (heads / kv_heads)``). The forward stops after the last
selected layer. What is computed is ``[selected heads, query tokens, entries + query tokens]``
per layer: never an attention matrix over the text.

Supports Llama-style attention (``q_proj`` then RoPE, no query norm): Llama, Mistral, Qwen2,
SmolLM. Other architectures get a clear error. For transformers' Llama, Qwen2 and Mistral
(no sliding window) ``entry_mass`` computes the same numbers with ``probe_forward``, which
reads the memory's tensors without copying them (several times faster on CPU); the hooks
serve every other Llama-style model and cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from shared_core.errors import InputError
from shared_core.memory.cpu_threads import pass_threads
from shared_core.memory.entry_map import TokenMap
from shared_core.memory.positions import rotate_half
from shared_core.memory.probe_forward import direct_masses, supports_direct

Head = tuple[int, int]


@dataclass(frozen=True)
class EntryAttention:
    """Per selected head: calibrated mass on each kept entry and where each entry came from."""

    heads: tuple[Head, ...]
    mass: torch.Tensor  # [heads, entries] float32 (query minus the "N/A" question)
    origins: torch.Tensor  # [heads, entries] int64 text-token index, -1 for the frame
    token_map: TokenMap


class _Done(Exception):
    """Raised by the last hook to stop the forward early."""


def attention_layers(model: Any) -> Sequence[Any]:
    """The decoder layers of a Hugging Face causal LM (``model.model.layers``)."""
    decoder = model.get_decoder()
    layers = decoder.layers
    first = layers[0].self_attn
    if not isinstance(first.q_proj, torch.nn.Module) or "q_norm" in first._modules:
        raise InputError(
            f"{type(model).__name__}: the attention probe supports Llama-style attention "
            "(q_proj then RoPE, no query norm)"
        )
    return layers


def model_head_grid(model: Any) -> tuple[int, int]:
    """``(layers, query heads)`` of a Hugging Face causal LM."""
    cfg = model.config
    return int(cfg.num_hidden_layers), int(cfg.num_attention_heads)


def check_heads(grid: tuple[int, int], heads: Sequence[Head]) -> list[Head]:
    """Validate ``(layer, query head)`` pairs against a model's ``(layers, heads)``."""
    n_layers, n_heads = grid
    out = []
    for pair in heads:
        if len(pair) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in pair):
            raise InputError(f"a head is a (layer, head) pair of ints, got {pair!r}")
        layer, head = pair
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise InputError(
                f"head {pair!r} is outside the model's {n_layers} layers x {n_heads} heads"
            )
        out.append((layer, head))
    if not out:
        raise InputError("the head set is empty")
    return out


def entry_mass(
    model: Any,
    cache: Any,
    ids: Sequence[int],
    start_position: int,
    rows: tuple[int, int],
    heads: Sequence[Head],
    memory_entries: int,
) -> torch.Tensor:
    """Mean attention mass from the query rows onto each memory entry, per selected head.

    ``cache`` is a fork of the memory (its layers start at the memory's tensors and grow by
    concatenation); ``ids`` the query's tokens at ``start_position``; ``rows`` the
    ``[first, last)`` tokens whose attention is averaged (the question's own tokens).
    Returns ``[len(heads), memory_entries]`` float32, rows in the order of ``heads``.
    The fork is read, not grown, when ``probe_forward.supports_direct(model)`` and its layers
    hold the memory as tensors; it is discarded either way.
    """
    heads = check_heads(model_head_grid(model), heads)
    memory = _memory_tensors(cache, max(layer for layer, _ in heads), memory_entries)
    if memory is not None and supports_direct(model):
        (mass,), _ = direct_masses(
            model, *memory, start_position, [(ids, rows)], heads, keep_prior=False
        )
        return mass
    cfg = model.config
    n_heads = int(cfg.num_attention_heads)
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_heads)
    group = n_heads // n_kv
    layers = attention_layers(model)
    by_layer: dict[int, list[int]] = {}
    for i, (layer, _) in enumerate(heads):
        by_layer.setdefault(layer, []).append(i)
    last = max(by_layer)
    out = torch.zeros(len(heads), memory_entries, dtype=torch.float32)
    a, b = rows
    captured: dict[int, torch.Tensor] = {}

    def pre_hook(module: Any, args: tuple, kwargs: dict) -> None:
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        cos, sin = kwargs["position_embeddings"]
        h = hidden[:, a:b]
        q = module.q_proj(h).view(1, b - a, n_heads, -1).transpose(1, 2)  # [1, H, R, d]
        c, s = cos[:, a:b].unsqueeze(1), sin[:, a:b].unsqueeze(1)
        captured[module.layer_idx] = q * c + rotate_half(q) * s

    def post_hook(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        layer = module.layer_idx
        q = captured.pop(layer)
        keys = cache.layers[layer].keys  # [1, kv, memory + query, d], rotated
        picks = by_layer[layer]
        q_heads = torch.tensor([heads[i][1] for i in picks])
        qs = q[0, q_heads].float()  # [n, R, d]
        ks = keys[0, q_heads // group].float()  # [n, E + Q, d]
        scores = torch.matmul(qs, ks.transpose(-1, -2)) * module.scaling  # [n, R, E + Q]
        total = ks.shape[-2]
        row_pos = memory_entries + torch.arange(a, b)[:, None]
        col = torch.arange(total)[None, :]
        scores = scores.masked_fill((col > row_pos)[None], float("-inf"))
        probs = torch.softmax(scores, dim=-1)[..., :memory_entries].mean(dim=1)  # [n, E]
        out[torch.tensor(picks)] = probs.cpu()
        if layer == last:
            raise _Done

    handles = []
    for layer in by_layer:
        attn = layers[layer].self_attn
        handles.append(attn.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(attn.register_forward_hook(post_hook, with_kwargs=True))
    device = model.device
    pos = torch.arange(start_position, start_position + len(ids), device=device)
    try:
        with torch.inference_mode(), pass_threads(device):
            model(
                input_ids=torch.tensor([list(ids)], device=device),
                position_ids=pos[None],
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
    except _Done:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return out


def _memory_tensors(
    cache: Any, last: int, entries: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
    """The memory's keys and values per layer up to ``last`` when ``cache`` holds them as
    plain tensors (a fork from ``kv_state.cache_of``), else ``None``."""
    layers = getattr(cache, "layers", None)
    if layers is None or len(layers) <= last:
        return None
    keys = [getattr(layers[i], "keys", None) for i in range(last + 1)]
    values = [getattr(layers[i], "values", None) for i in range(last + 1)]
    for t in (*keys, *values):
        if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.shape[-2] != entries:
            return None
    return keys, values


def question_rows(ids: Sequence[int], other: Sequence[int]) -> tuple[int, int]:
    """The ``[first, last)`` tokens of ``ids`` that differ from the same frame around ``other``
    (the question's own tokens, without the chat template around them)."""
    n = min(len(ids), len(other))
    a = 0
    while a < n and ids[a] == other[a]:
        a += 1
    z = 0
    while z < n - a and ids[len(ids) - 1 - z] == other[len(other) - 1 - z]:
        z += 1
    b = len(ids) - z
    return (a, b) if b > a else (0, len(ids))


#: The content-free question whose attention is subtracted (calibration).
NULL_QUERY = "N/A"
