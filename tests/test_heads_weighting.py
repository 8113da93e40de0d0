"""Agreement weighting: the heads' list counts in fusion as much as the selected heads agree
on the query (their per-chunk scores' mean correlation), ``heads_weighting="fixed"`` keeps
``heads_weight`` as given, and saves from before the option keep their fixed weight."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from scripted import shared_embedder
from test_attention_heads import DOCS, head_set_for, make

from shared_core.config import MemoRAGConfig
from shared_core.errors import InputError
from shared_core.heads.ranker import AttentionRanker, agreement
from shared_core.heads.route import AttentionRoute
from shared_core.memory.attention_probe import EntryAttention
from shared_core.pipeline import MemoRAG
from shared_core.saved_settings import saved_settings


def test_agreement_is_the_mean_pairwise_correlation() -> None:
    a = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    assert agreement(torch.stack([a, 2 * a + 1])) == pytest.approx(1.0)
    assert agreement(torch.stack([a, -a])) == pytest.approx(-1.0)
    b = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64)  # uncorrelated with a
    assert agreement(torch.stack([a, a, b])) == pytest.approx(1 / 3)
    assert agreement(a[None]) == 1.0  # one head agrees with itself
    assert agreement(torch.stack([a, torch.ones(4, dtype=torch.float64)])) == 0.0
    assert agreement(torch.ones(3, 1, dtype=torch.float64)) == 0.0  # one chunk: no ranking


def test_config_checks_the_weighting() -> None:
    assert MemoRAGConfig().heads_weighting == "agreement"
    with pytest.raises(InputError, match="heads_weighting"):
        MemoRAGConfig(heads_weighting="loud")
    with pytest.raises(InputError, match="heads_weighting"):
        AttentionRoute(weighting="loud")


def _planted(mem, chunk, opposed: bool):
    """Two heads: the first puts its mass on ``chunk``; the second the same, or its negative."""

    def entry_attention(query, heads):
        state = mem._state
        origins = torch.stack([state.origins[layer][h // 2] for layer, h in heads])
        tmap = state.token_map
        doc = torch.where(origins >= 0, tmap.doc[origins.clamp_min(0)].long(), -1)
        char = tmap.char[origins.clamp_min(0)].long()
        doc_no = [d.doc_id for d in DOCS].index(chunk.doc_id)
        inside = (doc == doc_no) & (char >= chunk.start) & (char < chunk.end)
        mass = torch.where(inside, 1.0, 0.01).float()
        if opposed:
            mass[1] = -mass[0]
        return EntryAttention(tuple(heads), mass, origins, tmap)

    return entry_attention


def _pipeline(mem, **kw) -> MemoRAG:
    """A heads-route pipeline over ``mem`` with small chunks (many of them to rank)."""
    kw.setdefault("retrieval_chunk_size", 16)
    kw.setdefault("chunk_overlap", 0)
    return MemoRAG(memory=mem, embedder=shared_embedder(), head_set=head_set_for(mem), **kw)


@pytest.mark.parametrize("opposed", [False, True])
def test_the_list_weight_follows_the_heads_agreement(llama, tokenizer, monkeypatch, opposed):
    mem = make(llama, tokenizer, beacon_ratio=4)
    rag = _pipeline(mem)
    rag.memorize(DOCS)
    query = "Which line is it?"
    dense = [h.passage.id for h in rag.index.search(query, 3)]
    target = next(c for c in rag.index.chunks if c.chunk_id not in dense)
    monkeypatch.setattr(mem, "entry_attention", _planted(mem, target, opposed))
    result = rag.retrieve(query, 3)
    (clue,) = [c for c in result.clues if c.kind == "attention"]
    ids = [p.passage.id for p in result.passages]
    if opposed:  # the heads contradict each other: their list counts for nothing
        assert clue.weight == 0.0 and ids == dense
    else:
        assert clue.weight == pytest.approx(MemoRAGConfig().heads_weight, rel=1e-3)
        assert ids[0] == target.chunk_id
    fixed = _pipeline(mem, search_index=rag.index, heads_weighting="fixed")
    (clue,) = [c for c in fixed.retrieve(query, 3).clues if c.kind == "attention"]
    assert clue.weight == MemoRAGConfig().heads_weight


def test_a_save_before_agreement_weighting_keeps_its_fixed_weight() -> None:
    where = Path("manifest.json")
    old = saved_settings(where, {"heads_weight": 0.5}, {})
    assert old["heads_weight"] == 0.5 and old["heads_weighting"] == "fixed"
    new = saved_settings(where, {"heads_weight": 2.0, "heads_weighting": "agreement"}, {})
    assert new["heads_weighting"] == "agreement"
    given = saved_settings(where, {"heads_weight": 0.5}, {"heads_weighting": "agreement"})
    assert given["heads_weighting"] == "agreement"


def test_the_heads_alone_keep_their_weight_when_they_disagree(llama, tokenizer, monkeypatch):
    mem = make(llama, tokenizer, beacon_ratio=4)
    rag = _pipeline(mem, retrieval="heads", query_weight=0.0)
    rag.memorize(DOCS)
    first, last = rag.index.chunks[0], rag.index.chunks[-1]
    one, other = _planted(mem, first, opposed=False), _planted(mem, last, opposed=False)

    def apart(query, heads):  # head 0 points at the first chunk, head 1 at the last
        a, b = one(query, heads), other(query, heads)
        mass = torch.stack([a.mass[0], b.mass[1]])
        return EntryAttention(a.heads, mass, a.origins, a.token_map)

    monkeypatch.setattr(mem, "entry_attention", apart)
    scored = AttentionRanker(mem, head_set_for(mem)).chunk_scores("q?", rag.index.chunks)
    assert scored.agreement < 0  # two heads on different chunks disagree
    result = rag.retrieve("Which line is it?", 3)
    (clue,) = [c for c in result.clues if c.kind == "attention"]
    assert clue.weight == MemoRAGConfig().heads_weight  # no other list counts: full weight
    assert {result.passages[0].passage.id, result.passages[1].passage.id} == {
        first.chunk_id,
        last.chunk_id,
    }
