"""The retrieval heads over the beacon memory: entry origins, the token map, the query pass.

**Origins.** The raw stream a beacon memory read is ``prefix + text (+ added text) + suffix``.
Every kept entry gets one text-token index (``-1``: the frame), computed from the state's
counters, so nothing extra is stored per entry:

* a raw entry of the open window: the raw token it is;
* a beacon: the **last raw token of the ``ratio`` tokens it follows** (beacon ``j`` of a window
  starting at raw index ``s`` follows raw token ``s + (j + 1) * ratio - 1``). Its whole mass
  goes to the chunk holding that token; a beacon whose interval straddles a chunk border is
  credited to the later chunk (at most ``ratio - 1`` tokens away). Under full-coverage
  attention a beacon also sees its window's earlier tokens, so the interval is the part it
  was placed to condense, not all it saw.

A ``TokenMap`` (text token -> document, char; ``entry_map.py``) is built when the text is
read, kept beside the state and saved as ``beacon_tokens.safetensors``. Saves without it
(older versions) still load; ranking by attention then says to memorize again.

**The query pass.** The query, framed as prompts are, is planned as ``generate`` would feed
it (beacons interleaved every ``ratio`` raw tokens of the open window) but runs as **one**
step over the memory's entries (a query crossing a window end would, in generation, see that
window's beacons only; here its later tokens still see the raw entries: window 2048 makes this
rare). An observer in the model's attention computes ``softmax(q . k / sqrt(d))`` for the
selected query heads only (query head ``h`` reads KV head ``h // (heads / kv_heads)``) over
``entries + query entries`` and averages it over the question's own raw tokens; the step stops
after the last selected layer. Minus the same for ``"N/A"`` (cached per memory state).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from shared_core.errors import IncompatibleMemoryError, LimitError, PersistenceError
from shared_core.inputs import check_query
from shared_core.memory.attention_probe import (
    NULL_QUERY,
    EntryAttention,
    check_heads,
    question_rows,
)
from shared_core.memory.beacon.model import BeaconForCausalLM
from shared_core.memory.beacon.state import BeaconState, plan_chunk
from shared_core.memory.entry_map import TokenMap, build_token_map
from shared_core.models.chat_format import ChatFormat
from shared_core.persistence.safetensors_checks import write_tensors

Head = tuple[int, int]
TOKEN_FILE = "beacon_tokens.safetensors"


def entry_origins(state: BeaconState, frame: int, text_tokens: int) -> torch.Tensor:
    """``[entries]`` int64: each kept entry's text-token index (``-1``: frame or beyond).

    ``frame`` is the prefix's length (raw tokens before the text), ``text_tokens`` the text's.
    """
    per_window = state.window // state.ratio
    b = torch.arange(state.n_beacons, dtype=torch.int64)
    closed = (b // per_window) * state.window + (b % per_window + 1) * state.ratio - 1
    tail, raw = [], state.window_start
    for is_beacon in state.tail_flags:
        if is_beacon:
            tail.append(raw - 1)
        else:
            tail.append(raw)
            raw += 1
    origins = torch.cat([closed, torch.tensor(tail, dtype=torch.int64)]) - frame
    return torch.where((origins >= 0) & (origins < text_tokens), origins, -1)


def text_token_map(
    tokenizer: Any,
    joined: str,
    ids: Sequence[int],
    docs: Sequence[Any],
    base: TokenMap | None,
    first_doc: int,
    *,
    continued: bool,
) -> TokenMap | None:
    """The token map after reading ``joined`` (``docs`` joined by ``"\\n\\n"``; when it
    ``continued`` a text, with a leading ``"\\n\\n"``, appended to that text's ``base``
    map); ``None`` when either part has none."""
    spans, at = [], 2 if continued else 0
    for doc in docs:
        spans.append((at, at + len(doc.text)))
        at += len(doc.text) + 2
    new = build_token_map(tokenizer, joined, ids, spans, first_doc)
    if new is None or (continued and base is None):
        return None
    return base.extend(new) if continued and base is not None else new


def write_token_map(folder: Path, token_map: TokenMap | None) -> dict[str, Any]:
    """Save the map beside the state; the manifest fields that name it (none without one)."""
    if token_map is None:
        return {}
    write_tensors(folder / TOKEN_FILE, token_map.tensors())
    return {"token_map": {"file": TOKEN_FILE, "tokens": len(token_map)}}


def read_token_map(
    folder: Path, section: Mapping[str, Any], *, text_tokens: int, consumed: int, frame: int
) -> TokenMap | None:
    """The saved map (checked against the text and the state), or ``None`` for a save
    written before beacon memories kept one."""
    entry = section.get("token_map")
    if entry is None:
        return None
    from safetensors import safe_open

    from shared_core.persistence import check_safetensors_header

    where = folder / "manifest.json"
    if not isinstance(entry, Mapping) or entry.get("file") != TOKEN_FILE:
        raise PersistenceError(f"{where}: token_map must name {TOKEN_FILE}")
    if entry.get("tokens") != text_tokens or consumed != frame + text_tokens:
        raise PersistenceError(
            f"{where}: the token map's {entry.get('tokens')!r} tokens do not match the "
            f"{text_tokens} text tokens the state read"
        )
    path = folder / TOKEN_FILE
    header = check_safetensors_header(path)
    expected = {"t.doc": [text_tokens], "t.char": [text_tokens]}
    got = {k: v.get("shape") for k, v in header.items() if k != "__metadata__"}
    if got != expected or any(header[k].get("dtype") != "I32" for k in expected):
        raise PersistenceError(f"{path}: expected int32 t.doc/t.char of {text_tokens} tokens")
    with safe_open(str(path), framework="pt") as f:
        doc, char = f.get_tensor("t.doc"), f.get_tensor("t.char")
    docs = section.get("documents")
    n_docs = len(docs) if isinstance(docs, list) else 0
    return TokenMap.from_tensors(doc, char, tokens=text_tokens, docs=n_docs, where=str(path))


def query_mass(
    lm: BeaconForCausalLM,
    ready: BeaconState,
    ids: Sequence[int],
    rows: tuple[int, int],
    heads: Sequence[Head],
    max_positions: int,
) -> torch.Tensor:
    """Mean attention of the raw query tokens ``rows`` (``[first, last)`` of ``ids``) onto each
    of ``ready``'s entries, per head: ``[len(heads), entries]`` float32."""
    cfg = lm.config
    memory = ready.entries
    # One step for the whole query: a window just long enough that plan_chunk takes it all;
    # beacons land where generation would put them (the window is a multiple of the ratio).
    span = replace(ready, window=ready.consumed - ready.window_start + len(ids))
    plan = plan_chunk(span, ids, cfg.beacon_token_id)
    total = memory + len(plan.entries)
    if total > max_positions:
        raise LimitError(
            f"the query is {len(ids):,} tokens; with the memory's {memory:,} entries it needs "
            f"{total:,} of the model's {max_positions:,} positions"
        )
    device = lm.device
    q_rows = torch.tensor(plan.raw_rows[rows[0] : rows[1]], dtype=torch.int64, device=device)
    by_layer: dict[int, list[int]] = {}
    for i, (layer, _) in enumerate(heads):
        by_layer.setdefault(layer, []).append(i)
    group = cfg.num_heads // cfg.num_kv_heads
    scale = 1.0 / math.sqrt(cfg.head_dim)
    allowed = torch.arange(total, device=device)[None, :] <= (memory + q_rows)[:, None]
    out = torch.zeros(len(heads), memory, dtype=torch.float32)

    def observe(layer: int, q: torch.Tensor, keys: torch.Tensor) -> None:
        picks = by_layer.get(layer)
        if not picks:
            return
        h = torch.tensor([heads[i][1] for i in picks], dtype=torch.int64, device=q.device)
        qs = q[0, h].index_select(1, q_rows.to(q.device)).float()  # [n, R, d]
        ks = keys[0, h.to(keys.device) // group].float().to(q.device)  # [n, M + T, d]
        scores = torch.matmul(qs, ks.transpose(-1, -2)) * scale  # [n, R, M + T]
        # (layers may sit on different devices under device_map="auto")
        scores = scores.masked_fill(~allowed.to(q.device)[None], float("-inf"))
        probs = torch.softmax(scores, dim=-1)[..., :memory].mean(dim=1)  # [n, M]
        out[torch.tensor(picks)] = probs.cpu()

    flags = [i for i, f in enumerate(plan.flags) if f]
    beacons = torch.tensor(flags, dtype=torch.long, device=device) if flags else None
    with torch.inference_mode():
        lm.step(
            torch.tensor([plan.entries], dtype=torch.long, device=device),
            beacons,
            ready.past(),
            observe=observe,
            last_layer=max(by_layer),
        )
    return out


class BeaconHeadProbe:
    """``entry_attention`` for one beacon memory (caches the ``"N/A"`` pass per state)."""

    def __init__(
        self,
        lm: BeaconForCausalLM,
        chat: ChatFormat,
        frame: tuple[str, str],
        prefix_len: int,
        max_positions: int,
    ) -> None:
        self.lm, self.chat, self.frame = lm, chat, frame
        self.prefix_len, self.max_positions = prefix_len, max_positions
        self._null: tuple[weakref.ref[BeaconState], tuple[Head, ...], torch.Tensor] | None = None

    def entry_attention(
        self,
        ready: BeaconState,
        token_map: TokenMap | None,
        text_tokens: int,
        query: str,
        heads: Sequence[Head],
    ) -> EntryAttention:
        if token_map is None:
            raise IncompatibleMemoryError(
                "this beacon memory keeps no token map (saved by an older version or read "
                "with a tokenizer without character offsets): memorize the text again to rank "
                "by attention"
            )
        check_query(query)
        cfg = self.lm.config
        picked = tuple(check_heads((cfg.num_layers, cfg.num_heads), heads))
        intro, ack = self.frame
        ids = self.chat.continuation(intro, ack, (), query)
        null_ids = self.chat.continuation(intro, ack, (), NULL_QUERY)
        cached = self._null
        if cached is not None and cached[0]() is ready and cached[1] == picked:
            null = cached[2]
        else:
            rows = question_rows(null_ids, ids)
            null = query_mass(self.lm, ready, null_ids, rows, picked, self.max_positions)
            self._null = (weakref.ref(ready), picked, null)
        rows = question_rows(ids, null_ids)
        mass = query_mass(self.lm, ready, ids, rows, picked, self.max_positions) - null
        origins = entry_origins(ready, self.prefix_len, text_tokens)
        return EntryAttention(picked, mass, origins.repeat(len(picked), 1), token_map)
