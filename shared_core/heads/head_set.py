"""Retrieval head sets as data: which (layer, head) pairs of a model rank passages, and how
they were chosen. One JSON file per model; the embedded SmolLM2's ships in ``heads/sets/``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from shared_core.errors import IncompatibleMemoryError, InputError, PersistenceError

FORMAT = "memorag-head-set/1"


@dataclass(frozen=True)
class HeadSet:
    """Selected retrieval heads of one model.

    ``model`` and ``fingerprint`` (the memory's ``fingerprint()``: ``model_fingerprint`` of
    ``models.loading`` for Hugging Face models, the beacon model's own hash for beacon
    checkpoints) name the weights the heads were measured on; ``heads`` are ``(layer, query
    head)``; ``calibration`` says how (data sets, metric, date, questions) and ``scores``
    holds each head's metric.
    """

    model: str
    fingerprint: str
    heads: tuple[tuple[int, int], ...]
    revision: str = "local"
    calibration: dict[str, Any] = field(default_factory=dict)
    scores: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.heads:
            raise InputError("a head set needs at least one (layer, head)")
        for pair in self.heads:
            if len(pair) != 2 or not all(
                isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in pair
            ):
                raise InputError(f"a head is a (layer, head) pair of non-negative ints: {pair!r}")
        if self.scores and len(self.scores) != len(self.heads):
            raise InputError("scores must give one number per head")

    def check_model(self, name: str, fingerprint: str) -> None:
        """Refuse a model other than the one the heads were calibrated on."""
        if fingerprint != self.fingerprint:
            raise IncompatibleMemoryError(
                f"the head set was calibrated on {self.model!r} (fingerprint "
                f"{self.fingerprint[:12]}...), not on {name!r} ({fingerprint[:12]}...); calibrate "
                "heads for this model with `memorag calibrate-heads DATA_DIR --model ...`"
            )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["heads"] = [list(h) for h in self.heads]
        data["scores"] = list(self.scores)
        return {"format": FORMAT, **data}

    @classmethod
    def from_json(cls, data: Any, *, where: str = "head set") -> HeadSet:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise PersistenceError(f"{where}: not a {FORMAT} file")
        try:
            return cls(
                model=str(data["model"]),
                fingerprint=str(data["fingerprint"]),
                heads=tuple((int(h[0]), int(h[1])) for h in data["heads"] if len(h) == 2),
                revision=str(data.get("revision", "local")),
                calibration=dict(data.get("calibration") or {}),
                scores=tuple(float(s) for s in data.get("scores") or ()),
            )
        except (KeyError, TypeError, ValueError, InputError) as exc:
            raise PersistenceError(f"{where}: bad head set ({exc})") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> HeadSet:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PersistenceError(f"{path}: cannot read the head set ({exc})") from None
        return cls.from_json(data, where=str(path))


def shipped_head_sets() -> list[HeadSet]:
    """The head sets packaged with the library."""
    folder = resources.files("shared_core.heads") / "sets"
    out = []
    for item in sorted(folder.iterdir(), key=lambda p: p.name):
        if item.name.endswith(".json"):
            out.append(HeadSet.from_json(json.loads(item.read_text("utf-8")), where=item.name))
    return out


def find_head_set(fingerprint: str) -> HeadSet | None:
    """The shipped head set for the model with this fingerprint, if any."""
    return next((h for h in shipped_head_sets() if h.fingerprint == fingerprint), None)
