"""A save holds the whole ``MemoRAGConfig`` and ``from_dir`` rebuilds it through the same
checks; an argument that contradicts the save is refused or wins, as ``saved_settings`` says;
saves written before the whole config was saved still load."""

from __future__ import annotations

import json
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from scripted import ScriptedMemory, shared_embedder

from shared_core.config import MemoRAGConfig, field_table, model_ref
from shared_core.errors import ConfigError, IncompatibleMemoryError, PersistenceError
from shared_core.head_sets import HeadSet
from shared_core.memory.compressed_kv import CompressedKVMemory
from shared_core.pipeline import MemoRAG, read_save_info
from shared_core.saved_settings import saved_settings
from shared_core.saving import pipeline_section

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CORPUS = [
    "The fox lives by the barn at the edge of the wood.",
    "The owl sleeps in the hollow oak all through the day.",
    "The miller grinds wheat at the mill on the river.",
]
WHERE = Path("manifest.json")

#: A value other than the default for EVERY field (a field added without one fails below).
SAMPLES: dict[str, Any] = {
    "mem_model_name_or_path": "org/tiny-mem",
    "ret_model_name_or_path": "org/tiny-ret",
    "gen_model_name_or_path": "org/tiny-gen",
    "cache_dir": "/tmp/memorag-cache",
    "access_token": "hf_secret_token",
    "revision": "v1",
    "device": "cpu",
    "dtype": "float16",
    "load_in_4bit": True,
    "enable_flash_attn": True,
    "device_map": "balanced",
    "memory_backend": "compressed_kv",
    "beacon_ratio": 8,
    "window": 256,
    "scorer": "key_norm",
    "position_mode": "compact",
    "compress": "always",
    "memory_options": {
        "reserve_tokens": 64,
        "max_chars": 1000,
        "max_documents": 5,
        "max_new_tokens_cap": 99,
        "show_progress": False,
    },
    "ret_hit": 5,
    "retrieval_chunk_size": 128,
    "chunk_overlap": 8,
    "search_k": 7,
    "index": "qdrant",
    "search_mode": "bm25",
    "index_options": {"path": "/tmp/q", "collection": "notes", "api_key": "k-secret"},
    "clue_strategy": "span+answer",
    "anchor_clues": False,
    "max_clues": 2,
    "query_weight": 1.5,
    "fusion": "rrf",
    "rrf_k": 10,
    "retrieval": "clues",
    "head_set": HeadSet("org/tiny-mem", "0" * 16, ((0, 1),)),
    "heads_weight": 0.5,
    "heads_weighting": "fixed",
    "candidate_k": 20,
    "answer_style": "free",
    "language": "zh",
}
#: What comes back where it is not the value itself (FieldRole.saved says why).
NOT_RESTORED = {
    "access_token": None,  # a secret: never saved
    "index_options": {"path": "/tmp/q", "collection": "notes"},  # api_key: never saved
    "head_set": None,  # saved by content beside the config (pipeline.head_set)
}


@pytest.fixture(scope="module")
def embedder():
    return shared_embedder()


def _round_trip(config: MemoRAGConfig, embedder, generator: str = "model") -> dict[str, Any]:
    memory = ScriptedMemory()
    memory.memorize(CORPUS)
    section = pipeline_section(config, memory, embedder, config.language, generator)
    section["head_set"] = SAMPLES["head_set"].to_json()  # as MemoRAG.save adds it
    text = json.dumps(section)  # what a manifest holds: JSON only
    assert "hf_secret_token" not in text and "k-secret" not in text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unsaved api_key is warned about
        return saved_settings(WHERE, json.loads(text), {})


def test_every_config_field_survives_a_save(embedder):
    names = [f.name for f in fields(MemoRAGConfig)]
    assert sorted(names) == sorted(SAMPLES), "give every new field a sample and save it"
    config = MemoRAGConfig(**SAMPLES)
    back = MemoRAGConfig.from_options(_round_trip(config, embedder))
    for name in names:
        want = NOT_RESTORED.get(name, getattr(config, name))
        if name in ("mem_model_name_or_path", "ret_model_name_or_path", "gen_model_name_or_path"):
            want = model_ref(want)
        got = getattr(back, name)
        assert (dict(got) if name.endswith("_options") else got) == (
            dict(want) if isinstance(want, dict) or name.endswith("_options") else want
        ), name


def test_every_field_has_a_role_and_the_table_lists_it():
    table = field_table()
    assert [row[0] for row in table] == [f.name for f in fields(MemoRAGConfig)]
    for name, default, role in table:
        assert role.applies and role.saved in (
            "value",
            "model",
            "resolved",
            "if_named",
            "content",
            "options",
            "never",
        ), name
        if name in SAMPLES:
            assert SAMPLES[name] != default, name


def test_the_reported_search_settings_come_back_from_a_save(embedder, tmp_path):
    """MemoRAG(search_mode="bm25", max_clues=2, search_k=7) came back dense, 16, None."""
    pipe = MemoRAG(
        memory=ScriptedMemory(), embedder=embedder, search_mode="bm25", max_clues=2, search_k=7
    )
    pipe.memorize(CORPUS).save(tmp_path / "m")
    again = MemoRAG.from_dir(tmp_path / "m", memory=ScriptedMemory(), embedder=embedder)
    c = again.config
    assert (c.search_mode, c.max_clues, c.search_k, c.index) == ("bm25", 2, 7, "faiss")
    assert type(again.index).__name__ == type(pipe.index).__name__


def test_a_memory_built_from_the_save_gets_the_saved_memory_settings(
    embedder, tiny_llama_dir, tmp_path
):
    settings = {
        "mem_model_name_or_path": str(tiny_llama_dir),
        "window": 64,
        "beacon_ratio": 4,
        "compress": "always",
        "scorer": "key_norm",
        "reserve_tokens": 32,
        "show_progress": False,
        "retrieval_chunk_size": 32,
        "chunk_overlap": 0,
        "clue_strategy": "none",
        "device": "cpu",
    }
    pipe = MemoRAG(embedder=embedder, **settings)
    pipe.memorize(CORPUS, save_dir=tmp_path / "m")
    again = MemoRAG.from_dir(tmp_path / "m", embedder=embedder)
    resolved = {"language": "en", "memory_backend": "compressed_kv"}  # as they were in force
    assert again.config == pipe.config.with_changes(**resolved)
    memory = again.memory
    assert (memory.window, memory.beacon_ratio, memory.scorer.name) == (64, 4, "key_norm")
    assert (memory.compress, memory.reserve_tokens) == ("always", 32)

    # an argument the saved memory depends on must agree with the save ...
    for name, value in (("window", 128), ("beacon_ratio", 8), ("retrieval_chunk_size", 64)):
        with pytest.raises(IncompatibleMemoryError, match=rf"{name}={value} contradicts"):
            MemoRAG.from_dir(tmp_path / "m", embedder=embedder, **{name: value})
    same = MemoRAG.from_dir(tmp_path / "m", embedder=embedder, window=64, compress="always")
    assert same.config.window == 64
    # ... a runtime setting given to from_dir wins over the saved one
    served = MemoRAG.from_dir(
        tmp_path / "m", embedder=embedder, search_mode="hybrid", max_clues=3, reserve_tokens=16
    )
    c = served.config
    assert (c.search_mode, c.max_clues, c.option("reserve_tokens")) == ("hybrid", 3, 16)
    assert c.option("show_progress") is False  # the other saved back-end options stay


def test_secrets_are_never_saved_and_their_absence_is_warned_about(embedder, tmp_path):
    pipe = MemoRAG(
        memory=ScriptedMemory(), embedder=embedder, access_token="hf_never_saved"
    ).memorize(CORPUS)
    pipe.save(tmp_path / "m")
    snapshot = tmp_path / "m" / (tmp_path / "m" / "CURRENT").read_text().strip()
    assert "hf_never_saved" not in (snapshot / "manifest.json").read_text()
    section = pipeline_section(
        MemoRAGConfig(index="qdrant", index_options={"url": "http://q", "api_key": "s3"}),
        pipe.memory,
        embedder,
        "en",
        "memory",
    )
    assert section["index_options"] == {"url": "http://q"}
    with pytest.warns(UserWarning, match=r"index_options \['api_key'\]"):
        saved_settings(WHERE, section, {})


#: A pipeline section exactly as the code before the whole-config save wrote it.
LEGACY_SECTION = {
    "anchor_clues": True,
    "chunk_overlap": 32,
    "clue_strategy": "copy+surrogate",
    "documents": ["doc-0", "doc-1"],
    "embedder": "sentence-transformers/all-MiniLM-L6-v2",
    "fusion": "auto",
    "gen_model_name_or_path": None,
    "generator": "memory",
    "head_set": None,
    "heads_weight": 2.0,
    "heads_weighting": "agreement",
    "language": "en",
    "mem_model_name_or_path": None,
    "memory_backend": "compressed_kv",
    "memory_options": {
        "beacon_ratio": 8,
        "compress": "always",
        "position_mode": "auto",
        "reserve_tokens": 64,
        "scorer": "stride",
        "window": 256,
    },
    "query_weight": 2.0,
    "ret_hit": 3,
    "ret_model_name_or_path": None,
    "retrieval": "auto",
    "retrieval_chunk_size": 512,
    "rrf_k": 60,
}


def test_a_save_written_before_the_whole_config_still_loads(embedder, tmp_path):
    config = MemoRAGConfig.from_options(saved_settings(WHERE, LEGACY_SECTION, {}))
    assert (config.beacon_ratio, config.window, config.compress) == (8, 256, "always")
    assert config.memory_options == {"reserve_tokens": 64} and config.language == "en"
    old = dict(LEGACY_SECTION, heads_weighting=None)
    del old["heads_weighting"]
    assert saved_settings(WHERE, old, {})["heads_weighting"] == "fixed"
    bad = dict(LEGACY_SECTION, memory_options={"window": -5})
    with pytest.raises(PersistenceError, match=r"pipeline\.window must be an int >= 16"):
        saved_settings(WHERE, bad, {})

    # end to end: a save whose pipeline section is in the old shape
    pipe = MemoRAG(memory=ScriptedMemory(), embedder=embedder, ret_hit=4).memorize(CORPUS)
    pipe.save(tmp_path / "m")
    manifest = next((tmp_path / "m").glob("snap-*/manifest.json"))
    data = json.loads(manifest.read_text())
    legacy = dict(LEGACY_SECTION, documents=data["pipeline"]["documents"], ret_hit=4)
    legacy.update(memory_backend="scripted", generator="custom")
    data["pipeline"] = legacy
    manifest.write_text(json.dumps(data))
    assert read_save_info(tmp_path / "m")["pipeline"]["ret_hit"] == 4
    with pytest.warns(UserWarning, match="custom generator"):
        again = MemoRAG.from_dir(tmp_path / "m", memory=ScriptedMemory(), embedder=embedder)
    assert again.config.ret_hit == 4 and len(again.index) == len(pipe.index)


def test_a_memory_built_directly_has_the_pipelines_defaults(llama, tokenizer):
    memory = CompressedKVMemory(llama, tokenizer)
    assert memory.options == MemoRAGConfig().kv_options()
    assert (memory.scorer.name, memory.compress, memory.beacon_ratio) == (
        "stride",
        "when_needed",
        32,
    )
    with pytest.raises(ConfigError) as caught:
        CompressedKVMemory(llama, tokenizer, window=3)
    assert caught.value.field == "window"
    with pytest.raises(ConfigError, match="reserve_tokens"):
        CompressedKVMemory(llama, tokenizer, reserve_tokens=-(10**6))


def test_a_kv_memory_refuses_settings_it_does_not_take(llama, tokenizer):
    with pytest.raises(ConfigError, match="ret_hit") as caught:
        CompressedKVMemory(llama, tokenizer, ret_hit=3)
    assert caught.value.field == "ret_hit"
