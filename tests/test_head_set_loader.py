"""The head-set loader (issue 25): only exact ``[layer, head]`` int pairs load, nothing is
reinterpreted (no truncated triples, no "17" -> 17, no True -> 1, no 2.9 -> 2, no duplicates),
heads outside the model are refused naming the file, and any JSON at all gives either the head
set it says or a ``PersistenceError`` (property-based)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from crash_worker import make_memory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared_core.errors import IncompatibleMemoryError, PersistenceError
from shared_core.head_sets import FORMAT, HeadSet
from shared_core.heads.ranker import AttentionRanker


def head_file(heads: Any, **extra: Any) -> dict[str, Any]:
    return {"format": FORMAT, "model": "m", "fingerprint": "f", "heads": heads, **extra}


@pytest.mark.parametrize(
    ("heads", "message"),
    [
        ([[17, 4, 9], [18, 6]], "list of \\[layer, head\\] int pairs"),
        ([["17", "4"], [True, 2.9]], "list of \\[layer, head\\] int pairs"),
        ([[1, 2]] * 10_000, "head \\[1, 2\\] is listed more than once"),
        ([[-1, 0]], "list of \\[layer, head\\] int pairs"),
        ([], "at least one"),
        ("abc", "list of \\[layer, head\\] int pairs"),
    ],
)
def test_a_head_set_is_never_silently_reinterpreted(tmp_path, heads, message):
    path = tmp_path / "heads.json"
    path.write_text(json.dumps(head_file(heads)))
    with pytest.raises(PersistenceError, match=rf"{path}: .*{message}|{path}: {message}"):
        HeadSet.load(path)


def test_scores_of_the_wrong_type_are_refused(tmp_path):
    for scores in (["1.0"], [True], [1e400], "abc"):
        with pytest.raises(PersistenceError, match="scores"):
            HeadSet.from_json(head_file([[0, 0]], scores=scores), where="x.json")


def test_heads_outside_the_model_are_refused_naming_the_file(tmp_path, llama):
    memory = make_memory(llama)
    layers, heads = memory.head_grid()
    for pair in ([layers, 0], [0, heads], [layers + 100, heads + 100]):
        path = tmp_path / f"heads-{pair[0]}-{pair[1]}.json"
        data = head_file([[0, 0], pair], fingerprint=memory.fingerprint(), model=memory.name)
        path.write_text(json.dumps(data))
        head_set = HeadSet.load(path)
        with pytest.raises(
            IncompatibleMemoryError, match=rf"{path}: head \[{pair[0]}, {pair[1]}\]"
        ):
            AttentionRanker(memory, head_set)
    inside = HeadSet(memory.name, memory.fingerprint(), ((layers - 1, heads - 1),))
    assert AttentionRanker(memory, inside).head_set is inside


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 1 << 70) | st.floats() | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)


def _exact_pairs(value: Any) -> bool:
    def index(x: Any) -> bool:
        return type(x) is int and 0 <= x < 1 << 20

    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(h, list) and len(h) == 2 and all(index(x) for x in h) for h in value)
        and len({tuple(h) for h in value}) == len(value)
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(heads=_json | st.lists(st.lists(st.integers(-2, 40), min_size=1, max_size=3), max_size=6))
def test_any_json_loads_as_exactly_the_pairs_it_says_or_is_refused(heads):
    try:
        loaded = HeadSet.from_json(head_file(heads), where="fuzzed.json")
    except PersistenceError as exc:
        assert str(exc).startswith("fuzzed.json: ")
        assert not _exact_pairs(heads)
        return
    assert _exact_pairs(heads)
    assert loaded.heads == tuple(tuple(h) for h in heads)


@settings(max_examples=100, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(st.integers(0, 64), st.integers(0, 64)), min_size=1, max_size=20, unique=True
    ),
    calibration=st.dictionaries(
        st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3
    ),
)
def test_a_saved_head_set_loads_back_equal(tmp_path_factory, pairs, calibration):
    path: Path = tmp_path_factory.mktemp("heads") / "set.json"
    head_set = HeadSet("m", "f", tuple(pairs), calibration=calibration, scores=(0.5,) * len(pairs))
    head_set.save(path)
    assert HeadSet.load(path) == head_set
