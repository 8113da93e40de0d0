"""Choose a model's retrieval heads from questions with gold evidence paragraphs.

For each question its own paragraphs are memorized, the question runs once over the memory
with every head, and each (layer, head) ranks the paragraphs by its calibrated attention mass
(``ranker.score_chunks``). A head's score is its mean paragraph recall@``at`` over the
questions; the ``top`` best heads form the ``HeadSet``. Any ``AttentionMemory`` calibrates:
by default a full-KV ``CompressedKVMemory`` of ``model``, or, for a beacon checkpoint
(``backend="beacon"``, or ``"auto"`` with a ``memorag`` name), a ``NativeBeaconMemory`` at the
checkpoint's ratio (the heads are then measured on beacons, as that memory will use them).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from shared_core.errors import InputError
from shared_core.head_sets import HeadSet
from shared_core.memory.attention_memory import AttentionMemory

CALIBRATION_BACKENDS = ("auto", "full_kv", "beacon")


def head_recall(
    memory: AttentionMemory, questions: Sequence[Any], *, at: int = 2, show: bool = True
) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """Every head's mean paragraph recall@``at`` over ``questions`` (``EvidenceQuestion``)."""
    from shared_core.heads.ranker import score_chunks

    n_layers, n_heads = memory.head_grid()
    heads = [(layer, h) for layer in range(n_layers) for h in range(n_heads)]
    total = torch.zeros(len(heads), dtype=torch.float64)
    for q in tqdm(questions, desc="calibrate heads", unit="q", disable=not show):
        memory.memorize(list(q.documents), show_progress=False)
        attention = memory.entry_attention(q.question, heads)
        keys = [(i, 0, len(d.text)) for i, d in enumerate(q.documents)]
        per_head = score_chunks(attention, keys)  # [heads, paragraphs]
        gold = torch.tensor([d.doc_id in q.gold for d in q.documents], dtype=torch.float64)
        top = torch.topk(per_head, min(at, per_head.shape[1]), dim=1).indices
        total += gold[top].sum(dim=1) / gold.sum()
    return heads, total / max(1, len(questions))


def calibration_memory(model: str | None, backend: str = "auto") -> AttentionMemory:
    """The memory heads are measured on: full KV of ``model``, or its beacon memory."""
    from shared_core.config import resolve_backend

    if backend not in CALIBRATION_BACKENDS:
        raise InputError(f"backend must be one of {CALIBRATION_BACKENDS}, got {backend!r}")
    chosen = "full_kv" if backend == "full_kv" else resolve_backend(backend, model)
    if chosen == "beacon":
        from shared_core.memory.beacon import NativeBeaconMemory

        if model is None:
            raise InputError("calibrating the beacon memory needs a memorag checkpoint (--model)")
        return NativeBeaconMemory.from_pretrained(model, show_progress=False)
    from shared_core.memory.compressed_kv import CompressedKVMemory

    return CompressedKVMemory.from_pretrained(model, beacon_ratio=1)


def calibrate_heads(
    data_dirs: str | Path | Sequence[str | Path],
    *,
    model: str | None = None,
    memory: AttentionMemory | None = None,
    backend: str = "auto",
    limit: int | None = 40,
    top: int = 4,
    at: int = 2,
    show_progress: bool = True,
) -> HeadSet:
    """Select ``top`` heads of ``model`` (hub id or folder; ``None`` = the embedded SmolLM2;
    ``backend`` as in ``calibration_memory``) or of ``memory``'s model by paragraph
    recall@``at`` on the first ``limit`` questions of each data folder."""
    from shared_core.heads.evidence_sets import load_evidence_set

    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise InputError(f"top must be an int >= 1, got {top!r}")
    if memory is not None and not isinstance(memory, AttentionMemory):
        raise InputError(f"a {type(memory).__name__} memory has no retrieval heads to calibrate")
    dirs = [data_dirs] if isinstance(data_dirs, (str, Path)) else list(data_dirs)
    questions = [q for d in dirs for q in load_evidence_set(d, limit)]
    if not questions:
        raise InputError("no questions to calibrate on")
    if memory is None:
        memory = calibration_memory(model, backend)
    heads, recall = head_recall(memory, questions, at=at, show=show_progress)
    order = torch.argsort(recall, descending=True, stable=True)[:top].tolist()
    ratio = memory.stats().beacon_ratio
    kind = "full-KV" if ratio == 1 else f"{memory.backend} (ratio {ratio})"
    return HeadSet(
        model=memory.name,
        fingerprint=memory.fingerprint(),
        revision=memory.revision,
        heads=tuple(heads[i] for i in order),
        scores=tuple(round(float(recall[i]), 4) for i in order),
        calibration={
            "data": [Path(d).name for d in dirs],
            "questions": len(questions),
            "metric": f"paragraph recall@{at}, each question's own paragraphs as a {kind} memory",
            "calibrated_by": "attention mass minus the 'N/A' question's",
            "mean_over_all_heads": round(float(recall.mean()), 4),
            "date": datetime.date.today().isoformat(),
        },
    )
