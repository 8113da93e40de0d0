"""Choose a model's retrieval heads from questions with gold evidence paragraphs.

For each question its own paragraphs are memorized (full KV), the question runs once over the
memory with every head, and each (layer, head) ranks the paragraphs by its calibrated attention
mass (``retrieval.attention_ranker``). A head's score is its mean paragraph recall@``at`` over
the questions; the ``top`` best heads form the ``HeadSet``.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from shared_core.errors import InputError
from shared_core.heads.head_set import HeadSet
from shared_core.memory.compressed_kv import CompressedKVMemory
from shared_core.models.loading import model_fingerprint


def head_recall(
    memory: CompressedKVMemory, questions: Sequence[Any], *, at: int = 2, show: bool = True
) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """Every head's mean paragraph recall@``at`` over ``questions`` (``EvidenceQuestion``)."""
    from shared_core.heads.ranker import score_chunks

    cfg = memory.model.config
    heads = [
        (layer, h)
        for layer in range(int(cfg.num_hidden_layers))
        for h in range(int(cfg.num_attention_heads))
    ]
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


def calibrate_heads(
    data_dirs: str | Path | Sequence[str | Path],
    *,
    model: str | None = None,
    memory: CompressedKVMemory | None = None,
    limit: int | None = 40,
    top: int = 8,
    at: int = 2,
    show_progress: bool = True,
) -> HeadSet:
    """Select ``top`` heads of ``model`` (hub id or folder; ``None`` = the embedded SmolLM2)
    by paragraph recall@``at`` on the first ``limit`` questions of each data folder."""
    from shared_core.heads.evidence_sets import load_evidence_set

    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise InputError(f"top must be an int >= 1, got {top!r}")
    dirs = [data_dirs] if isinstance(data_dirs, (str, Path)) else list(data_dirs)
    questions = [q for d in dirs for q in load_evidence_set(d, limit)]
    if not questions:
        raise InputError("no questions to calibrate on")
    if memory is None:
        memory = CompressedKVMemory.from_pretrained(model, beacon_ratio=1)
    heads, recall = head_recall(memory, questions, at=at, show=show_progress)
    order = torch.argsort(recall, descending=True, stable=True)[:top].tolist()
    return HeadSet(
        model=memory.name,
        fingerprint=model_fingerprint(memory.model),
        revision=memory.revision,
        heads=tuple(heads[i] for i in order),
        scores=tuple(round(float(recall[i]), 4) for i in order),
        calibration={
            "data": [Path(d).name for d in dirs],
            "questions": len(questions),
            "metric": f"paragraph recall@{at}, each question's own paragraphs as a full-KV memory",
            "calibrated_by": "attention mass minus the 'N/A' question's",
            "mean_over_all_heads": round(float(recall.mean()), 4),
            "date": datetime.date.today().isoformat(),
        },
    )
