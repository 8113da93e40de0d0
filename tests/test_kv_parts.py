"""The compressed KV memory is composed of parts with declared inputs: its reading part
(``KVPrefill``) works from a ``PrefillInputs`` alone, and the document separator is defined
once (``memory.reading``), so the spans the prefill records match the text it reads."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shared_core.config import KVOptions
from shared_core.memory.compressed_kv import CompressedKVMemory
from shared_core.memory.kv_prefill import KVPrefill, PrefillInputs
from shared_core.memory.reading import DOC_SEPARATOR, document_spans, joined_text
from shared_core.types import Document

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = [
    "The keeper of the north light writes in his log at dusk.",
    "Gulls nest on the cliffs above the quay in the spring.",
]


@settings(max_examples=60, deadline=None)
@given(
    texts=st.lists(st.text(min_size=1, max_size=20).filter(str.strip), min_size=1, max_size=5),
    continuing=st.booleans(),
)
def test_each_document_span_points_at_its_text(texts: list[str], continuing: bool):
    docs = [Document(t, doc_id=f"d{i}") for i, t in enumerate(texts)]
    joined = joined_text(docs, continuing=continuing)
    spans = document_spans(docs, continuing=continuing)
    assert [joined[a:b] for a, b in spans] == [d.text for d in docs]
    assert joined.startswith(DOC_SEPARATOR) == continuing


def test_the_prefill_part_reads_from_its_inputs_alone(llama, tokenizer):
    memory = CompressedKVMemory(
        llama, tokenizer, window=32, beacon_ratio=4, compress="always", show_progress=False
    )
    inputs = memory._prefill.inputs
    assert dataclasses.is_dataclass(inputs) and isinstance(inputs.options, KVOptions)
    with pytest.raises(dataclasses.FrozenInstanceError):
        inputs.name = "other"  # type: ignore[misc]
    part = KVPrefill(
        PrefillInputs(**{f.name: getattr(inputs, f.name) for f in dataclasses.fields(inputs)})
    )
    docs = [Document(t, doc_id=f"d{i}") for i, t in enumerate(TEXTS)]
    alone = part.read(None, docs, False)
    memory.memorize(docs)
    state = memory._state
    frame = len(inputs.prefix_ids) + len(inputs.suffix_ids)
    assert alone.entries == state.entries and alone.entries - frame < alone.text_tokens
    for a, b in zip(alone.keys, state.keys, strict=True):
        torch.testing.assert_close(a, b)
    added = part.read(alone, [Document("The ferry leaves at dawn.", doc_id="d2")], False)
    assert added.documents[-1]["doc_id"] == "d2" and alone.entries < added.entries
    assert part.capacity_tokens() == memory.capacity_tokens()


def test_the_key_kinds_are_the_clue_kinds():
    from typing import get_args

    from shared_core.types import ClueKind, KeyKind

    named = {v for k, v in vars(KeyKind).items() if k.isupper()}
    assert named == set(get_args(ClueKind))
