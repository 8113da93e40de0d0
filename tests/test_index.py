"""DenseIndex over the embedded MiniLM model: search, incremental add, safe persistence."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from shared_core.errors import (
    IncompatibleMemoryError,
    InputError,
    NoMemoryError,
    PersistenceError,
)
from shared_core.retrieval.embeddings import (
    DEFAULT_EMBEDDER_NAME,
    Embedder,
    default_embedder_path,
    resolve_device,
)
from shared_core.retrieval.index import CHUNKS_FILE, VECTORS_FILE, DenseIndex
from shared_core.types import Chunk, SearchBackend

pytestmark = pytest.mark.real_model

CORPUS = {
    "cats": "Cats are small domesticated felines that purr and chase mice.",
    "rockets": "The rocket engine burns liquid hydrogen and oxygen to reach orbit.",
    "bread": "Knead the dough, let it rise, then bake the bread in a hot oven.",
    "tax": "Income tax returns must be filed with the revenue service by April.",
    "volcano": "Lava erupted from the volcano and flowed down toward the village.",
}


def _chunks(items: dict[str, str], doc: str = "doc") -> list[Chunk]:
    return [
        Chunk(f"{doc}#{key}", doc, text, i * 100, i * 100 + len(text), {"topic": key})
        for i, (key, text) in enumerate(items.items())
    ]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder.load(device="cpu")


@pytest.fixture(scope="module")
def index(embedder: Embedder) -> DenseIndex:
    built = DenseIndex(embedder)
    built.add(_chunks(CORPUS))
    return built


@pytest.fixture
def saved(index: DenseIndex, tmp_path: Path) -> tuple[Path, dict]:
    return tmp_path, index.save(tmp_path)


# ---------------------------------------------------------------------- embedder


def test_embedder_basics(embedder: Embedder) -> None:
    assert embedder.name == DEFAULT_EMBEDDER_NAME
    assert embedder.dim == 384
    assert embedder.max_tokens == 256
    assert embedder.tokenizer("hi", add_special_tokens=False).input_ids
    vectors = embedder.embed_passages(["one", "two", "three"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.embed_queries([]).shape == (0, 384)
    with pytest.raises(InputError):
        embedder.embed_queries("not a list")  # type: ignore[arg-type]


def test_embedder_constructor_is_lazy() -> None:
    lazy = Embedder(name="/nonexistent/model/folder")
    assert lazy.name == "/nonexistent/model/folder"
    assert "not loaded" in repr(lazy)


def test_embedder_wraps_a_built_model(embedder: Embedder) -> None:
    wrapped = Embedder(embedder.model, query_prefix="query: ")
    assert wrapped.name == DEFAULT_EMBEDDER_NAME
    plain = embedder.embed_queries(["cats"])
    prefixed = wrapped.embed_queries(["cats"])
    assert not np.allclose(plain, prefixed)
    np.testing.assert_allclose(prefixed, embedder.embed_queries(["query: cats"]), atol=1e-6)


def test_embedder_helpers() -> None:
    assert Path(default_embedder_path(), "modules.json").is_file()
    assert resolve_device("cpu") == "cpu"
    assert resolve_device() in {"cpu", "cuda", "mps"}
    with pytest.raises(InputError):
        resolve_device("")
    configured = Embedder.load(query_prefix="query: ", batch_size=8, device="cpu")
    assert (configured.query_prefix, configured.batch_size) == ("query: ", 8)
    assert Embedder(name=default_embedder_path()).name == DEFAULT_EMBEDDER_NAME
    with pytest.raises(InputError):
        Embedder(batch_size=0)


def test_name_of_a_wrapped_hub_model() -> None:
    class Card:
        base_model = None

    class Config:
        name_or_path = "/cache/hub/models--BAAI--bge-m3/snapshots/0123abc"

    class Module:
        auto_model = type("AutoModel", (), {"config": Config})

    class Fake:
        model_card_data = Card()

        def __getitem__(self, index: int) -> Module:
            return Module()

    assert Embedder(Fake()).name == "BAAI/bge-m3"  # type: ignore[arg-type]
    Card.base_model = "org/model"
    assert Embedder(Fake()).name == "org/model"  # type: ignore[arg-type]
    assert Embedder(Fake(), name="mine").name == "mine"  # type: ignore[arg-type]


# ---------------------------------------------------------------------- search


def test_is_a_search_backend(index: DenseIndex) -> None:
    assert isinstance(index, SearchBackend)
    assert len(index) == 5
    assert [c.chunk_id for c in index.chunks] == [f"doc#{k}" for k in CORPUS]
    assert index.get("doc#tax").text == CORPUS["tax"]
    assert index.get("missing") is None


@pytest.mark.parametrize(
    ("query", "topic"),
    [
        ("Which animal purrs?", "cats"),
        ("How do spacecraft get to space?", "rockets"),
        ("baking recipe", "bread"),
        ("deadline for filing taxes", "tax"),
        ("eruption of molten rock", "volcano"),
    ],
)
def test_search_ranks_the_right_passage_first(index: DenseIndex, query: str, topic: str) -> None:
    hits = index.search(query, 3)
    assert len(hits) == 3
    top = hits[0].passage
    assert top.id == f"doc#{topic}"
    assert top.text == CORPUS[topic]
    assert top.metadata["topic"] == topic
    assert top.metadata["doc_id"] == "doc" and top.metadata["chunk_id"] == top.id
    assert top.metadata["end"] - top.metadata["start"] == len(top.text)
    assert [h.rank for h in hits] == [0, 1, 2]
    assert hits[0].score >= hits[1].score >= hits[2].score


def test_search_many_equals_single_searches(index: DenseIndex, monkeypatch) -> None:
    queries = ["purring pets", "oven", "lava", "orbit"]
    single = [index.search(q, 2) for q in queries]
    calls: list[int] = []
    original = index.embedder.embed_queries

    def counting(texts):
        calls.append(len(texts))
        return original(texts)

    monkeypatch.setattr(index.embedder, "embed_queries", counting)
    many = index.search_many(queries, 2)
    assert calls == [4]
    assert [[h.passage.id for h in hits] for hits in many] == [
        [h.passage.id for h in hits] for hits in single
    ]
    for a, b in zip(many, single, strict=True):
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
    assert index.search_many([], 3) == []


def test_k_larger_than_index_returns_all(index: DenseIndex) -> None:
    hits = index.search("anything", 50)
    assert sorted(h.passage.id for h in hits) == sorted(f"doc#{k}" for k in CORPUS)


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "3"])
def test_bad_k_raises(index: DenseIndex, k: object) -> None:
    with pytest.raises(InputError):
        index.search("cats", k)  # type: ignore[arg-type]


def test_bad_queries_raise(index: DenseIndex) -> None:
    with pytest.raises(InputError):
        index.search("   ", 2)
    with pytest.raises(InputError):
        index.search_many("cats", 2)  # type: ignore[arg-type]


def test_empty_index_raises_no_memory(embedder: Embedder) -> None:
    with pytest.raises(NoMemoryError, match="empty"):
        DenseIndex(embedder).search("cats", 1)


def test_incremental_add_and_duplicate_ids(embedder: Embedder) -> None:
    grown = DenseIndex(embedder)
    grown.add(_chunks({"cats": CORPUS["cats"]}))
    grown.add([])
    grown.add(_chunks({"bread": CORPUS["bread"]}, doc="other"))
    assert len(grown) == 2
    assert grown.search("sourdough loaf", 1)[0].passage.id == "other#bread"
    with pytest.raises(InputError, match="duplicate"):
        grown.add(_chunks({"cats": "again"}))
    with pytest.raises(InputError, match="duplicate"):
        grown.add(_chunks({"a": "x"}, doc="new") + _chunks({"a": "y"}, doc="new"))
    with pytest.raises(InputError):
        grown.add(["not a chunk"])  # type: ignore[list-item]
    assert len(grown) == 2  # failed adds change nothing


# ---------------------------------------------------------------------- persistence


def test_save_load_round_trip(index: DenseIndex, embedder: Embedder, saved) -> None:
    folder, manifest = saved
    assert set(manifest["files"]) == {VECTORS_FILE, CHUNKS_FILE}
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    assert manifest["embedder"] == DEFAULT_EMBEDDER_NAME
    assert (manifest["dim"], manifest["count"]) == (384, 5)
    json.dumps(manifest)

    loaded = DenseIndex.load(folder, embedder, expected=manifest)
    assert loaded.chunks == index.chunks
    np.testing.assert_array_equal(loaded.vectors(), index.vectors())
    for query in ("lava", "taxes", "purr"):
        assert loaded.search(query, 5) == index.search(query, 5)
    assert DenseIndex.load(folder, embedder).chunks == index.chunks  # expected is optional


def test_save_load_empty_index(embedder: Embedder, tmp_path: Path) -> None:
    manifest = DenseIndex(embedder).save(tmp_path)
    assert manifest["count"] == 0
    assert len(DenseIndex.load(tmp_path, embedder, expected=manifest)) == 0


def test_save_needs_an_existing_directory(index: DenseIndex, tmp_path: Path) -> None:
    with pytest.raises(PersistenceError):
        index.save(tmp_path / "missing")


def test_save_refuses_unserialisable_metadata(embedder: Embedder, tmp_path: Path) -> None:
    odd = DenseIndex(embedder)
    odd.add([Chunk("c#0", "c", "text", 0, 4, {"when": object()})])
    with pytest.raises(PersistenceError, match=CHUNKS_FILE):
        odd.save(tmp_path)


def _rewrite_json(folder: Path, edit) -> None:
    record = json.loads((folder / CHUNKS_FILE).read_text())
    edit(record)
    (folder / CHUNKS_FILE).write_text(json.dumps(record))


def _safetensors(header: object, body: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


@pytest.mark.parametrize(
    ("name", "corrupt", "message"),
    [
        (CHUNKS_FILE, lambda p: p.unlink(), "missing"),
        (VECTORS_FILE, lambda p: p.unlink(), "missing"),
        (CHUNKS_FILE, lambda p: p.write_text("{not json"), "JSON"),
        (CHUNKS_FILE, lambda p: p.write_bytes(b"\xff\xfe"), "JSON"),
        (CHUNKS_FILE, lambda p: p.write_text("[1, 2]"), "object"),
        (VECTORS_FILE, lambda p: p.write_bytes(p.read_bytes()[:-10]), "truncated"),
        (VECTORS_FILE, lambda p: p.write_bytes(b"\x01\x02"), "truncated"),
        (VECTORS_FILE, lambda p: p.write_bytes(p.read_bytes() + b"xx"), "trailing"),
        (
            VECTORS_FILE,
            lambda p: p.write_bytes(struct.pack("<Q", 1 << 60) + b"{}"),
            "header",
        ),
        (VECTORS_FILE, lambda p: p.write_bytes(struct.pack("<Q", 4) + b"{]}x"), "header"),
        (
            VECTORS_FILE,
            lambda p: p.write_bytes(
                _safetensors(
                    {
                        "vectors": {
                            "dtype": "F32",
                            "shape": [1 << 40, 384],
                            "data_offsets": [0, 1 << 50],
                        }
                    }
                )
            ),
            "shape",
        ),
        (
            VECTORS_FILE,
            lambda p: p.write_bytes(
                _safetensors(
                    {"vectors": {"dtype": "F32", "shape": [5, 384], "data_offsets": [0, 7680]}}
                )
            ),
            "truncated",
        ),
        (
            VECTORS_FILE,
            lambda p: p.write_bytes(
                _safetensors(
                    {"vectors": {"dtype": "F64", "shape": [5, 384], "data_offsets": [0, 15360]}},
                    bytes(15360),
                )
            ),
            "F32",
        ),
        (
            VECTORS_FILE,
            lambda p: p.write_bytes(
                _safetensors(
                    {"other": {"dtype": "F32", "shape": [5, 384], "data_offsets": [0, 7680]}},
                    bytes(7680),
                )
            ),
            "vectors",
        ),
        (
            VECTORS_FILE,
            lambda p: p.write_bytes(
                _safetensors(
                    {"vectors": {"dtype": "F32", "shape": [5, 384], "data_offsets": [0, 7680]}},
                    b"\xff" * 7680,
                )
            ),
            "NaN",
        ),
    ],
)
def test_corrupt_files_raise_persistence_error(
    saved, embedder: Embedder, name: str, corrupt, message: str
) -> None:
    folder, _manifest = saved
    corrupt(folder / name)
    with pytest.raises(PersistenceError, match=message) as info:
        DenseIndex.load(folder, embedder)
    assert name in str(info.value)
    assert not isinstance(info.value, IncompatibleMemoryError)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.update(count=4), "count"),
        (lambda r: r.update(count="5"), "count"),
        (lambda r: r.update(dim=-1), "dim"),
        (lambda r: r.update(chunks={}), "chunks"),
        (lambda r: r.update(format="other"), "format"),
        (lambda r: r.update(embedder=3), "embedder"),
        (lambda r: r["chunks"][2].update(start="0"), "chunk 2"),
        (lambda r: r["chunks"][1].update(text=None), "chunk 1"),
        (lambda r: r["chunks"][0].update(metadata=[]), "metadata"),
        (lambda r: r["chunks"][0].update(end=-5), "start"),
        (lambda r: r["chunks"][4].update(chunk_id="doc#cats"), "unique"),
        (lambda r: r["chunks"].__setitem__(3, "oops"), "chunk 3"),
    ],
)
def test_wrong_types_in_chunks_json(saved, embedder: Embedder, edit, message: str) -> None:
    folder, _manifest = saved
    _rewrite_json(folder, edit)
    with pytest.raises(PersistenceError, match=message) as info:
        DenseIndex.load(folder, embedder)
    assert CHUNKS_FILE in str(info.value)


def test_vectors_disagreeing_with_count_or_dim(saved, embedder: Embedder) -> None:
    folder, _manifest = saved
    from safetensors.numpy import save_file

    save_file({"vectors": np.zeros((4, 384), np.float32)}, str(folder / VECTORS_FILE))
    with pytest.raises(PersistenceError, match=r"shape.*\[5, 384\]") as info:
        DenseIndex.load(folder, embedder)
    assert VECTORS_FILE in str(info.value)
    save_file({"vectors": np.zeros((5, 12), np.float32)}, str(folder / VECTORS_FILE))
    with pytest.raises(PersistenceError, match=VECTORS_FILE):
        DenseIndex.load(folder, embedder)


def test_sha256_mismatch(saved, embedder: Embedder) -> None:
    folder, manifest = saved
    path = folder / VECTORS_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # still a valid file, but not the one the manifest describes
    path.write_bytes(bytes(data))
    DenseIndex.load(folder, embedder)  # loads without a manifest
    with pytest.raises(PersistenceError, match="sha256") as info:
        DenseIndex.load(folder, embedder, expected=manifest)
    assert VECTORS_FILE in str(info.value)
    _rewrite_json(folder, lambda r: r.update(extra=1))
    with pytest.raises(PersistenceError, match=f"{CHUNKS_FILE}.*sha256"):
        DenseIndex.load(folder, embedder, expected=manifest)


def test_manifest_disagreement(saved, embedder: Embedder) -> None:
    folder, manifest = saved
    with pytest.raises(PersistenceError, match="count"):
        DenseIndex.load(folder, embedder, expected={**manifest, "count": 9})
    with pytest.raises(PersistenceError, match="files"):
        DenseIndex.load(folder, embedder, expected={"files": None})


def test_missing_directory(embedder: Embedder, tmp_path: Path) -> None:
    with pytest.raises(PersistenceError, match="not a directory"):
        DenseIndex.load(tmp_path / "nowhere", embedder)


def test_embedder_name_mismatch(saved, embedder: Embedder) -> None:
    """A save records the embedder's weights fingerprint: the same weights under another name
    (a moved model folder) load; a save without a fingerprint (older) needs the same name."""
    folder, _manifest = saved
    other = Embedder(embedder.model, name="BAAI/bge-m3")
    assert len(DenseIndex.load(folder, other)) > 0
    chunks = folder / "chunks.json"
    record = json.loads(chunks.read_text())
    del record["embedder_fingerprint"]
    chunks.write_text(json.dumps(record))
    with pytest.raises(IncompatibleMemoryError) as info:
        DenseIndex.load(folder, other)
    text = str(info.value)
    assert DEFAULT_EMBEDDER_NAME in text and "BAAI/bge-m3" in text
