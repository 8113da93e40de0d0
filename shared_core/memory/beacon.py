"""Native beacon memory: the upstream ``TommyChien/memorag-*`` checkpoints (Activation Beacon).

Those models, loaded with ``trust_remote_code=True``, keep their own compressed memory inside
``model.memory`` (one beacon per ``beacon_ratio`` raw tokens; raw KV dropped window by window)
and expose ``export()`` / ``reset(**state)``. This class drives that protocol: memorize once,
restore the exported state before every prompt. The state lives inside the model, so prompts
are serialised by a lock. The state is saved as safetensors plus a JSON skeleton, never pickle.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from shared_core.errors import IncompatibleMemoryError, InputError, NoMemoryError, PersistenceError
from shared_core.inputs import ContextInput, as_documents, check_query
from shared_core.memory.base import Memory, MemoryStats
from shared_core.models.chat_format import ChatFormat, frame_texts
from shared_core.types import ChatTurn, Generation

_TENSORS = "beacon.safetensors"
_MORE = "More of the text follows.\n\n"


class NativeBeaconMemory(Memory):
    """Drives a beacon checkpoint's built-in memory (``model.memory.export/reset``)."""

    backend = "beacon"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str | None = None,
        revision: str = "local",
        beacon_ratio: int = 4,
        intro: str | None = None,
        ack: str | None = None,
        max_chars: int | None = 4_000_000,
    ) -> None:
        memory = getattr(model, "memory", None)
        if memory is None or not all(
            callable(getattr(memory, m, None)) for m in ("export", "reset")
        ):
            raise InputError(
                "a native beacon memory needs a memorag beacon checkpoint loaded with "
                "trust_remote_code=True (model.memory.export/reset); use backend='compressed_kv' "
                "for other models"
            )
        intro, ack = frame_texts(intro, ack)
        self.model, self.tokenizer = model, tokenizer
        self.name = name or str(getattr(model.config, "name_or_path", "beacon"))
        self.revision = revision
        self.beacon_ratio = beacon_ratio
        self.intro, self.ack = intro, ack
        self.max_chars = max_chars
        self.format = ChatFormat(tokenizer)
        self._state: Any = None
        self._documents: tuple[dict[str, Any], ...] = ()
        self._tokens = 0
        self._seconds = 0.0
        self._lineage = uuid.uuid4().hex
        self._lock = threading.Lock()

    @property
    def is_empty(self) -> bool:
        return self._state is None

    @property
    def lineage(self) -> str:
        return self._lineage

    @property
    def documents(self) -> tuple[dict[str, Any], ...]:
        return self._documents

    def _feed(self, ids: list[int]) -> None:
        with torch.inference_mode():
            self.model(input_ids=torch.tensor([ids], device=self.model.device))

    def memorize(self, context: ContextInput, *, show_progress: bool | None = None) -> MemoryStats:
        docs = as_documents(context, max_chars=self.max_chars)
        text_ids = self.format.encode("\n\n".join(d.text for d in docs))
        prefix, suffix = self.format.frame(self.intro, self.ack)
        started = time.perf_counter()
        with self._lock:
            self.model.memory.reset()
            self._feed(prefix + text_ids + suffix)
            self._state = self.model.memory.export()
            self._documents = tuple({"doc_id": d.doc_id, "chars": len(d.text)} for d in docs)
            self._tokens = len(text_ids)
            self._seconds = time.perf_counter() - started
            self._lineage = uuid.uuid4().hex
        return self.stats()

    def add(self, context: ContextInput, *, show_progress: bool | None = None) -> MemoryStats:
        if self.is_empty:
            return self.memorize(context)
        docs = as_documents(context, start_index=len(self._documents), max_chars=self.max_chars)
        text = "\n\n".join(d.text for d in docs)
        turns = [ChatTurn("user", _MORE + text), ChatTurn("assistant", self.ack)]
        ids = self.format.after_frame(self.intro, self.ack, turns, False)
        started = time.perf_counter()
        with self._lock:
            self.model.memory.reset(**self._state)
            self._feed(ids)
            self._state = self.model.memory.export()
            self._documents += tuple({"doc_id": d.doc_id, "chars": len(d.text)} for d in docs)
            self._tokens += len(self.format.encode(text))
            self._seconds += time.perf_counter() - started
        return self.stats()

    def generate(
        self,
        prompt: str,
        *,
        history: Sequence[ChatTurn] = (),
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
    ) -> Generation:
        check_query(prompt)
        if self._state is None:
            raise NoMemoryError("this memory is empty: call memorize(text) or load(dir) first")
        ids = self.format.continuation(self.intro, self.ack, history, prompt)
        sampling = (
            {"do_sample": True, "temperature": temperature}
            if temperature > 0
            else {"do_sample": False}
        )
        with self._lock, torch.inference_mode():
            self.model.memory.reset(**self._state)
            out = self.model.generate(
                input_ids=torch.tensor([ids], device=self.model.device),
                max_new_tokens=max_new_tokens,
                **sampling,
            )
        new = [int(t) for t in out[0][len(ids) :]]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        finish = "length" if len(new) >= max_new_tokens else "stop"
        for s in stop:
            if s and s in text:
                text, finish = text[: text.index(s)], "stop"
        return Generation(
            text=text, prompt_tokens=len(ids), completion_tokens=len(new), finish_reason=finish
        )

    def stream(
        self,
        prompt: str,
        *,
        history: Sequence[ChatTurn] = (),
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
    ) -> Iterator[str]:
        """The beacon model generates under a lock; the reply arrives as one piece."""
        generation = self.generate(
            prompt,
            history=history,
            max_new_tokens=max_new_tokens,
            stop=stop,
            temperature=temperature,
        )
        yield generation.text
        return generation

    def stats(self) -> MemoryStats:
        tensors = _flatten(self._state)[1] if self._state is not None else {}
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        return MemoryStats(
            backend=self.backend,
            tokens_read=self._tokens,
            documents=len(self._documents),
            memory_bytes=size,
            beacon_ratio=self.beacon_ratio,
            seconds=self._seconds,
            extra={"model": self.name},
        )

    def write_files(self, folder: Path) -> dict[str, Any]:
        from safetensors.torch import save_file

        if self._state is None:
            raise NoMemoryError("nothing to save: this memory is empty")
        skeleton, tensors = _flatten(self._state)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(folder / _TENSORS)
        )
        return {
            "backend": self.backend,
            "model": self.name,
            "model_revision": self.revision,
            "beacon_ratio": self.beacon_ratio,
            "skeleton": skeleton,
            "documents": list(self._documents),
            "tokens": self._tokens,
            "seconds": self._seconds,
            "lineage": self._lineage,
            "frame_sha256": hashlib.sha256(f"{self.intro}\0{self.ack}".encode()).hexdigest(),
        }

    def read_files(self, folder: Path, section: Mapping[str, Any]) -> None:
        from safetensors import safe_open

        from shared_core.persistence import check_safetensors_header

        where = folder / "manifest.json"
        for key, mine in (
            ("backend", self.backend),
            ("model", self.name),
            ("beacon_ratio", self.beacon_ratio),
        ):
            if section.get(key) != mine:
                raise IncompatibleMemoryError(
                    f"{where}: {key} is {section.get(key)!r} in the saved memory, {mine!r} here"
                )
        documents = section.get("documents")
        if not isinstance(documents, list) or not all(isinstance(d, dict) for d in documents):
            raise PersistenceError(f"{where}: documents must be a list of objects")
        header = check_safetensors_header(folder / _TENSORS)
        with safe_open(str(folder / _TENSORS), framework="pt") as f:
            tensors = {
                k: f.get_tensor(k).to(self.model.device) for k in header if k != "__metadata__"
            }
        state = _unflatten(section.get("skeleton"), tensors, where)
        with self._lock:
            self._state = state
            self._documents = tuple(documents)
            tokens = section.get("tokens")
            self._tokens = tokens if isinstance(tokens, int) and tokens >= 0 else 0
            self._seconds = float(section.get("seconds") or 0.0)
            self._lineage = str(section.get("lineage") or uuid.uuid4().hex)


def _flatten(value: Any, path: str = "s") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested state into a JSON skeleton and named tensors."""
    if isinstance(value, torch.Tensor):
        return {"$tensor": path}, {path: value}
    if isinstance(value, dict):
        skeleton, tensors = {}, {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise PersistenceError(f"beacon state key {key!r} is not a string")
            skeleton[key], found = _flatten(item, f"{path}.{key}")
            tensors.update(found)
        return {"$dict": skeleton}, tensors
    if isinstance(value, (list, tuple)):
        items, tensors = [], {}
        for i, item in enumerate(value):
            sk, found = _flatten(item, f"{path}.{i}")
            items.append(sk)
            tensors.update(found)
        return {"$list" if isinstance(value, list) else "$tuple": items}, tensors
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"$value": value}, {}
    raise PersistenceError(f"beacon state holds a {type(value).__name__}, which cannot be saved")


def _unflatten(
    skeleton: Any, tensors: Mapping[str, torch.Tensor], where: Path, depth: int = 0
) -> Any:
    """Rebuild a state from its skeleton, refusing anything malformed."""
    if depth > 32 or not isinstance(skeleton, dict) or len(skeleton) != 1:
        raise PersistenceError(f"{where}: the beacon state skeleton is malformed")
    ((kind, body),) = skeleton.items()
    if kind == "$tensor":
        if not isinstance(body, str) or body not in tensors:
            raise PersistenceError(f"{where}: the beacon state names a missing tensor {body!r}")
        return tensors[body]
    if kind == "$value":
        if body is not None and not isinstance(body, (bool, int, float, str)):
            raise PersistenceError(f"{where}: the beacon state holds a bad value")
        return body
    if kind == "$dict" and isinstance(body, dict):
        return {k: _unflatten(v, tensors, where, depth + 1) for k, v in body.items()}
    if kind in ("$list", "$tuple") and isinstance(body, list):
        items = [_unflatten(v, tensors, where, depth + 1) for v in body]
        return items if kind == "$list" else tuple(items)
    raise PersistenceError(f"{where}: the beacon state skeleton is malformed")
