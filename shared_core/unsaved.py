"""Which documents a pipeline holds that no save has (after a save that failed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from shared_core.types import Document


class UnsavedDocuments:
    """The documents added since the last successful save or load, by id and length: an
    ``add`` of exactly these again, with a save directory, is a retry of the save."""

    def __init__(self) -> None:
        self._docs: dict[str, int] = {}
        #: How many documents the memory held before the first unsaved one (None: all saved).
        self.start: int | None = None

    def added(self, docs: Sequence[Document], held_before: int) -> None:
        if self.start is None:
            self.start = held_before
        self._docs.update({str(d.doc_id): len(d.text) for d in docs})

    def clear(self) -> None:
        self._docs.clear()
        self.start = None

    def matches(self, docs: Sequence[Document]) -> bool:
        """Whether ``docs`` are all in memory unsaved already (same ids, same lengths)."""
        return bool(docs) and all(self._docs.get(str(d.doc_id)) == len(d.text) for d in docs)

    def note(self, save_dir: str | Path) -> str:
        """What the caller must know after a failed save: what is in memory but not saved."""
        ids = ", ".join(map(repr, list(self._docs)[:5])) + (" ..." if len(self._docs) > 5 else "")
        return (
            f"the document(s) {ids} are in this pipeline's memory but NOT saved in {save_dir} "
            "(the save there is unchanged): free space and call the same add(..., save_dir) "
            "again, or save(save_dir)"
        )
