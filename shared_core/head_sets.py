"""Retrieval head sets as data: which (layer, head) pairs of a model rank passages, and how
they were chosen. One JSON file per model; the embedded SmolLM2's ships in ``heads/sets/``."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from shared_core.errors import IncompatibleMemoryError, InputError, PersistenceError
from shared_core.persistence.files import parse_json, read_capped, replace_file

FORMAT = "memorag-head-set/1"
#: The most heads a set may hold (models have a few thousand query heads at most).
MAX_HEADS = 16_384
#: The largest head set file read.
MAX_FILE_BYTES = 8 * 1024 * 1024


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
    #: Where it was read from (a file, a save), named in errors; not part of the data.
    source: str = field(default="head set", compare=False, repr=False)

    def __post_init__(self) -> None:
        where = self.source
        if not self.heads:
            raise InputError(f"{where}: a head set needs at least one (layer, head)")
        if len(self.heads) > MAX_HEADS:
            raise InputError(f"{where}: {len(self.heads)} heads, over the cap of {MAX_HEADS}")
        for pair in self.heads:
            if (
                not isinstance(pair, tuple)
                or len(pair) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in pair)
            ):
                raise InputError(
                    f"{where}: a head is a (layer, head) pair of non-negative ints: {pair!r}"
                )
        if len(set(self.heads)) != len(self.heads):
            twice = next(h for i, h in enumerate(self.heads) if h in self.heads[:i])
            raise InputError(f"{where}: head {list(twice)} is listed more than once")
        if self.scores and len(self.scores) != len(self.heads):
            raise InputError(f"{where}: scores must give one number per head")

    def check_grid(self, grid: tuple[int, int]) -> None:
        """Refuse heads outside the model's ``(layers, query heads)``, naming the source."""
        layers, heads = grid
        for layer, head in self.heads:
            if not (layer < layers and head < heads):
                raise IncompatibleMemoryError(
                    f"{self.source}: head [{layer}, {head}] is outside the model's {layers} "
                    f"layers x {heads} heads (a head set of another model?)"
                )

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
        del data["source"]
        data["heads"] = [list(h) for h in self.heads]
        data["scores"] = list(self.scores)
        return {"format": FORMAT, **data}

    @classmethod
    def from_json(cls, data: Any, *, where: str = "head set") -> HeadSet:
        """A head set from its JSON; anything but exact ``[layer, head]`` int pairs (strings,
        bools, floats, triples), duplicates or a wrong field type is refused, naming ``where``."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise PersistenceError(f"{where}: not a {FORMAT} file")
        for key in ("model", "fingerprint"):
            if not isinstance(data.get(key), str):
                raise PersistenceError(f"{where}: {key!r} must be a string")
        raw_heads, scores = data.get("heads"), data.get("scores") or []
        if not isinstance(raw_heads, list) or not all(
            isinstance(h, list) and len(h) == 2 and all(_is_index(x) for x in h) for h in raw_heads
        ):
            raise PersistenceError(f"{where}: 'heads' must be a list of [layer, head] int pairs")
        if not isinstance(scores, list) or not all(_is_number(s) for s in scores):
            raise PersistenceError(f"{where}: 'scores' must be a list of finite numbers")
        calibration = data.get("calibration") or {}
        if not isinstance(calibration, dict) or not isinstance(data.get("revision", ""), str):
            raise PersistenceError(f"{where}: 'calibration' must be an object, 'revision' text")
        try:
            return cls(
                model=data["model"],
                fingerprint=data["fingerprint"],
                heads=tuple((h[0], h[1]) for h in raw_heads),
                revision=data.get("revision", "local"),
                calibration=dict(calibration),
                scores=tuple(float(s) for s in scores),
                source=where,
            )
        except InputError as exc:
            raise PersistenceError(str(exc)) from None

    def save(self, path: str | Path) -> None:
        """Write the JSON file (atomically; a link at ``path`` is replaced, never followed)."""
        data = (json.dumps(self.to_json(), indent=1) + "\n").encode("utf-8")
        replace_file(Path(path), data)

    @classmethod
    def load(cls, path: str | Path) -> HeadSet:
        """Read a head set file: a link, FIFO or device is refused, and at most
        ``MAX_FILE_BYTES`` are read."""
        raw = read_capped(Path(path), MAX_FILE_BYTES, label="head set ", follow=True)
        return cls.from_json(parse_json(raw, path), where=str(path))


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 20


def _is_number(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 1 << 53


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
