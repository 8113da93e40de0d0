"""Every setting is checked when the config is built, with a ``ConfigError`` naming it: any
value either builds a config that saves and rebuilds, or is refused by name; never another
exception, never later."""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared_core.config import BACKEND_OPTIONS, SCORER_NAMES, MemoRAGConfig
from shared_core.errors import ConfigError
from shared_core.memory.scorers import SCORERS
from shared_core.pipeline import MemoRAG
from shared_core.saved_settings import CONFIG_FORMAT, saved_settings

WHERE = Path("manifest.json")
NAMES = [f.name for f in fields(MemoRAGConfig)]
OPTIONS = sorted({name for names in BACKEND_OPTIONS.values() for name in names})

REFUSED = [
    ({"dtype": "bogus"}, "dtype"),
    ({"device": "banana"}, "device"),
    ({"device": "cuda:x"}, "device"),
    ({"query_weight": math.nan}, "query_weight"),
    ({"heads_weight": math.inf}, "heads_weight"),
    ({"heads_weight": 10**400}, "heads_weight"),
    ({"max_chars": -1}, "max_chars"),
    ({"max_new_tokens_cap": 0}, "max_new_tokens_cap"),
    ({"reserve_tokens": -(10**6)}, "reserve_tokens"),
    ({"max_documents": 2.5}, "max_documents"),
    ({"show_progress": "yes"}, "show_progress"),
    ({"window": True}, "window"),
    ({"ret_hit": 3.0}, "ret_hit"),
    ({"search_k": 0}, "search_k"),
    ({"beacon_ratio": False}, "beacon_ratio"),
    ({"scorer": "loudest"}, "scorer"),
    ({"scorer": 7}, "scorer"),
    ({"cache_dir": 5}, "cache_dir"),
    ({"revision": b"main"}, "revision"),
    ({"memory_options": ["reserve_tokens"]}, "memory_options"),
    ({"index_options": {"timeout": "5"}, "index": "qdrant"}, "index_options"),
    ({"index_options": {1: 2}}, "index_options"),
    ({"index": ["faiss"]}, "index"),
    ({"search_mode": "fuzzy"}, "search_mode"),
    ({"clue_strategy": 3}, "clue_strategy"),
    ({"head_set": 3}, "head_set"),
    ({"memory_backend": "gist", "chunk_tokens": 0}, "chunk_tokens"),
    ({"memory_backend": "gist", "beacon_ratio": 4}, "beacon_ratio"),
    ({"memory_backend": "beacon", "reserve_tokens": 8}, "reserve_tokens"),
    ({"memory_backend": "full_kv", "compress": "always"}, "compress"),
]


@pytest.mark.parametrize(("options", "name"), REFUSED, ids=[str(c[0]) for c in REFUSED])
def test_a_bad_setting_is_refused_at_construction_by_name(options: dict[str, Any], name: str):
    with pytest.raises(ConfigError, match=name) as caught:
        MemoRAG(**options)
    assert caught.value.field == name


def test_the_scorer_names_are_the_scorers_there_are():
    assert sorted(SCORER_NAMES) == sorted(SCORERS)


def test_a_torch_dtype_is_kept_by_its_name():
    import torch

    assert MemoRAGConfig(dtype=torch.bfloat16).dtype == "bfloat16"


ANY = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["auto", "cpu", "cuda:0", "float16", "stride", "rrf", "span", "qdrant"])
    | st.binary(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8) | st.sampled_from(OPTIONS), inner, max_size=3)
    ),
    max_leaves=6,
)


def _built_or_refused(options: dict[str, Any]) -> MemoRAGConfig | None:
    names = set(options)
    try:
        config = MemoRAGConfig.from_options(options)
    except ConfigError as exc:
        inner = set()
        for value in options.values():
            if isinstance(value, dict):
                inner |= {k for k in value if isinstance(k, str)}
        assert exc.field in names | inner | set(NAMES), (exc.field, options)
        return None
    # a config that builds also saves (JSON) and rebuilds through the same checks
    section = {"config_format": CONFIG_FORMAT, **config.saved_options()}
    section["generator"] = "model" if config.gen_model_name_or_path else "memory"  # as saved
    rebuilt = MemoRAGConfig.from_options(saved_settings(WHERE, json.loads(json.dumps(section)), {}))
    assert rebuilt.saved_options() == config.saved_options()
    return config


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(NAMES + OPTIONS), value=ANY)
def test_any_value_of_any_setting_builds_a_config_or_is_refused_by_name(name: str, value: Any):
    _built_or_refused({name: value})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(NAMES + OPTIONS), ANY, max_size=4))
def test_any_mix_of_settings_builds_a_config_or_is_refused_by_name(options: dict[str, Any]):
    _built_or_refused(options)
