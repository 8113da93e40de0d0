"""The memory interface every back-end implements, and its statistics."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from shared_core.errors import IncompatibleMemoryError, PersistenceError
from shared_core.inputs import ContextInput
from shared_core.models.decoding import GeneratorBase
from shared_core.persistence.files import describe_difference, is_int
from shared_core.types import TextGenerator


@dataclass
class MemoryStats:
    """What ``print_stats`` shows: how much was read, kept, and how fast."""

    backend: str
    tokens_read: int = 0
    documents: int = 0
    windows: int = 0
    kv_entries: int = 0
    memory_bytes: int = 0
    full_kv_bytes: int = 0
    beacon_ratio: int = 1
    window: int = 0
    position_mode: str = "absolute"
    capacity_tokens: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_read / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tokens_per_second": round(self.tokens_per_second, 1)}

    def summary(self) -> str:
        mib = 1024 * 1024
        lines = [
            f"memory back-end:   {self.backend} (beacon_ratio {self.beacon_ratio}, "
            f"{self.position_mode} positions)",
            f"tokens read:       {self.tokens_read:,} in {self.documents} document(s), "
            f"{self.windows} window(s) of {self.window}",
            f"KV entries kept:   {self.kv_entries:,} per layer and head",
            f"memory size:       {self.memory_bytes / mib:,.1f} MiB "
            f"(full KV would be {self.full_kv_bytes / mib:,.1f} MiB)",
            f"capacity:          {self.capacity_tokens:,} text tokens at these settings",
            f"memorize time:     {self.seconds:,.1f} s ({self.tokens_per_second:,.0f} tokens/s)",
        ]
        lines += [f"{k + ':':<19}{v}" for k, v in self.extra.items()]
        return "\n".join(lines)


class Memory(GeneratorBase, ABC):
    """A model that has read a long text once and answers prompts against it.

    ``generate``/``stream``/``start`` (from ``GeneratorBase``) never change the memory: each
    prompt runs on a fork or rolls back afterwards. What the pipeline uses beyond that is
    declared here, with the defaults of a memory that has no local model.
    """

    backend: ClassVar[str]
    #: Caps on one ``memorize``/``add`` call's text (``None``: none), checked before any work.
    max_chars: int | None = None
    max_documents: int | None = None
    #: The memory model's tokenizer (copy-from-text clues decode in its tokens), if any.
    tokenizer: Any = None
    #: Whether ``generate_constrained`` works (copy-from-text clues).
    supports_copying: bool = False

    @abstractmethod
    def memorize(self, context: ContextInput, *, show_progress: bool | None = None) -> MemoryStats:
        """Forget everything and read ``context`` (a text or documents)."""

    @abstractmethod
    def add(self, context: ContextInput, *, show_progress: bool | None = None) -> MemoryStats:
        """Read more text on top of what is memorized, without re-reading it."""

    @property
    @abstractmethod
    def is_empty(self) -> bool:
        """True until something was memorized."""

    @abstractmethod
    def stats(self) -> MemoryStats: ...

    def answer_generator(self) -> TextGenerator | None:
        """A plain generator over the memory's own model (no second copy), or ``None`` when
        the memory has none: then the pipeline needs ``generator=``."""
        return None

    # -- persistence ------------------------------------------------------------------------
    @abstractmethod
    def write_files(self, folder: Path) -> dict[str, Any]:
        """Write this memory's files into ``folder``; return its manifest section."""

    @abstractmethod
    def read_files(self, folder: Path, section: Mapping[str, Any]) -> None:
        """Restore from files written by ``write_files`` (already hash-checked)."""

    @property
    def documents(self) -> tuple[dict[str, Any], ...]:
        """One record (``doc_id``, ``chars``, ...) per memorized document, in order."""
        return ()

    @property
    @abstractmethod
    def lineage(self) -> str:
        """An id kept across ``add`` and re-saves; a new ``memorize`` starts a new one."""

    def save(self, save_dir: str | Path, *, overwrite: bool = False) -> None:
        """Atomically save to ``save_dir`` (safetensors + JSON manifest)."""
        from shared_core.persistence import SaveDir, write_manifest

        with SaveDir(save_dir).stage(lineage=self.lineage, overwrite=overwrite) as folder:
            section = self.write_files(folder)
            write_manifest(folder, {"kind": "memory", "lineage": self.lineage, "memory": section})

    def load(self, save_dir: str | Path) -> MemoryStats:
        """Replace the memory with the one saved in ``save_dir`` (checks compatibility)."""
        from shared_core.errors import PersistenceError
        from shared_core.persistence import SaveDir

        folder, manifest = SaveDir(save_dir).require()
        section = manifest.get("memory")
        if not isinstance(section, dict):
            raise PersistenceError(f"{folder / 'manifest.json'} has no 'memory' section")
        self.read_files(folder, section)
        return self.stats()


def check_memory_fields(where: Path, section: Mapping[str, Any]) -> None:
    """Check the generic fields of a memory's manifest section (documents, seconds, ...)."""
    documents = section.get("documents")
    if not isinstance(documents, list):
        raise PersistenceError(f"{where}: the memory's documents must be a list")
    seen: set[str] = set()
    for i, doc in enumerate(documents):
        doc_id = doc.get("doc_id") if isinstance(doc, dict) else None
        if not isinstance(doc_id, str) or not doc_id or doc_id in seen:
            raise PersistenceError(
                f"{where}: memory document {i} needs a unique, non-empty string doc_id"
            )
        seen.add(doc_id)
        chars = doc.get("chars", 0)
        keys = doc.get("metadata_keys", [])
        if not (is_int(chars) and chars >= 0) or not (
            isinstance(keys, list) and all(isinstance(k, str) for k in keys)
        ):
            raise PersistenceError(f"{where}: memory document {i} ({doc_id}) is malformed")
    seconds = section.get("seconds")
    if seconds is not None and not (
        isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and 0 <= seconds < 1e12
    ):
        raise PersistenceError(f"{where}: seconds must be a non-negative number")
    for key in ("text_sha256", "lineage"):
        if section.get(key) is not None and not isinstance(section.get(key), str):
            raise PersistenceError(f"{where}: {key} must be a string")


def check_identity(
    where: Path,
    section: Mapping[str, Any],
    backend: str,
    mine: Mapping[str, Any],
    keys: Iterable[str],
) -> None:
    """Refuse a saved memory written by another back-end, or whose ``keys`` differ from this
    memory's identity ``mine`` (model, tokenizer, ratio, prompts ...)."""
    if section.get("backend") != backend:
        raise IncompatibleMemoryError(
            f"{where}: the memory was written by back-end {section.get('backend')!r}, "
            f"not {backend!r}"
        )
    for key in keys:
        if section.get(key) != mine[key]:
            raise IncompatibleMemoryError(
                f"{where}: {key} {describe_difference(section.get(key), mine[key])}"
                "; load it with the same model, tokenizer, beacon_ratio and prompts it was "
                "written with"
            )
