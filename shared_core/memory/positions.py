"""RoPE bookkeeping for compressed memories.

Cached keys carry their rotary position. ``absolute`` mode leaves every kept entry at its true
text position (exact while the text fits the trained context). ``compact`` mode renumbers kept
entries densely and re-rotates their keys by the position change, so a model trained on N
positions holds about ``N * beacon_ratio`` text tokens.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

PositionMode = Literal["absolute", "compact"]


def rope_inv_freq(model: Any) -> torch.Tensor | None:
    """The rotary inverse frequencies of a HF model, or ``None`` if it has no RoPE."""
    for module in model.modules():
        inv = getattr(module, "inv_freq", None)
        if isinstance(inv, torch.Tensor) and "rotary" in type(module).__name__.lower():
            return inv.detach().float()
    return None


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rerotate(keys: torch.Tensor, delta: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Move rotated ``keys`` ``[..., n, dim]`` by ``delta`` positions (``[..., n]``)."""
    freqs = delta.to(torch.float32)[..., None] * inv_freq.to(keys.device)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    out = keys.float() * cos + rotate_half(keys.float()) * sin
    return out.to(keys.dtype)
