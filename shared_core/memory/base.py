"""The memory interface every back-end implements, and its statistics."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from shared_core.inputs import ContextInput
from shared_core.types import ChatTurn, Generation


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
            f"time:              {self.seconds:,.1f} s ({self.tokens_per_second:,.0f} tokens/s)",
        ]
        lines += [f"{k + ':':<19}{v}" for k, v in self.extra.items()]
        return "\n".join(lines)


class Memory(ABC):
    """A model that has read a long text once and answers prompts against it.

    ``generate``/``stream`` never change the memory: each prompt rolls back afterwards.
    """

    backend: ClassVar[str]

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

    @abstractmethod
    def stream(
        self,
        prompt: str,
        *,
        history: Sequence[ChatTurn] = (),
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
    ) -> Iterator[str]:
        """Yield the reply to ``prompt`` piece by piece, against the memory.

        The generator returns the finished ``Generation`` (token counts) when it ends.
        """

    def generate(
        self,
        prompt: str,
        *,
        history: Sequence[ChatTurn] = (),
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
    ) -> Generation:
        """The whole reply to ``prompt`` with token accounting."""
        run = self._decoder(prompt, history, max_new_tokens, stop, temperature)
        return run.run()

    def _decoder(
        self,
        prompt: str,
        history: Sequence[ChatTurn],
        max_new_tokens: int,
        stop: Sequence[str],
        temperature: float,
    ) -> Any:
        """A decoding run for ``prompt``; back-ends that decode elsewhere override ``generate``."""
        raise NotImplementedError

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
