"""Loading a beacon checkpoint: config.json and safetensors, by hub id or local folder.

Weights are read with ``safetensors`` only (never pickle). The model is built on the meta
device and the tensors are assigned, so a 7B checkpoint is not initialised twice. Placement:
cuda > mps > cpu, bf16 (else fp16) on GPUs and fp32 on CPU unless ``dtype`` says otherwise;
``device_map="auto"`` spreads layers over GPUs with accelerate; ``load_in_4bit`` quantises the
linear layers with bitsandbytes. Both are optional dependencies with clear errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from shared_core.errors import InputError, MemoRAGError
from shared_core.memory.beacon.config import BeaconConfig
from shared_core.memory.beacon.model import BeaconForCausalLM, StepOptions

_PATTERNS = ["config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json"]
_TOKENIZER_PATTERNS = ["tokenizer*", "special_tokens_map.json", "*.model", "vocab*", "merges*"]


def resolve_folder(
    name_or_path: str | Path,
    *,
    cache_dir: str | None = None,
    token: str | None = None,
    revision: str | None = None,
) -> tuple[Path, str]:
    """A local folder holding the checkpoint, and its revision (``local`` for folders)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path, "local"
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            str(name_or_path),
            cache_dir=cache_dir,
            token=token,
            revision=revision,
            allow_patterns=_PATTERNS + _TOKENIZER_PATTERNS,
        )
    except Exception as exc:  # hub errors come in many types; name the model either way
        raise InputError(
            f"cannot get the beacon checkpoint {str(name_or_path)!r}: it is no local folder and "
            f"the model hub did not serve it ({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc
    return Path(folder), Path(folder).name


def pick_device(device: str | None = "auto") -> torch.device:
    """``auto``: cuda, then mps, then cpu."""
    if device not in (None, "auto"):
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, dtype: torch.dtype | str | None) -> torch.dtype:
    """bf16 on CUDA where supported (else fp16), fp16 on MPS, fp32 on CPU."""
    if isinstance(dtype, str):
        value = getattr(torch, dtype, None)
        if not isinstance(value, torch.dtype):
            raise InputError(f"unknown dtype {dtype!r}")
        return value
    if dtype is not None:
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of ``model.safetensors`` or a sharded ``*.safetensors.index.json``."""
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [folder / s for s in shards]
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise InputError(f"{folder} has no .safetensors weights (pickle checkpoints are refused)")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        tensors.update(load_file(str(file)))
    return tensors


def build_model(
    cfg: BeaconConfig,
    tensors: dict[str, torch.Tensor],
    *,
    device: torch.device,
    dtype: torch.dtype,
    options: StepOptions | None = None,
) -> BeaconForCausalLM:
    """Assign checkpoint tensors to a meta-built model; refuse missing or unknown names."""
    with torch.device("meta"):
        model = BeaconForCausalLM(cfg, options)
    wanted = dict(model.state_dict())
    tensors = dict(tensors)
    if cfg.tie_word_embeddings and "lm_head.weight" not in tensors:
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]
    missing = sorted(set(wanted) - set(tensors))
    unexpected = sorted(k for k in set(tensors) - set(wanted) if "rotary" not in k)
    if missing or unexpected:
        raise InputError(
            "the checkpoint does not match the beacon layout: "
            f"missing {missing[:6]}{'...' if len(missing) > 6 else ''}, "
            f"unexpected {unexpected[:6]}{'...' if len(unexpected) > 6 else ''}"
        )
    for name, meta in wanted.items():
        if tuple(tensors[name].shape) != tuple(meta.shape):
            raise InputError(
                f"{name}: shape {tuple(tensors[name].shape)} in the checkpoint, "
                f"{tuple(meta.shape)} expected"
            )
    state = {k: tensors[k].to(device=device, dtype=dtype) for k in wanted}
    model.load_state_dict(state, assign=True, strict=True)
    return model.eval().requires_grad_(False)


def dispatch_auto(model: BeaconForCausalLM) -> BeaconForCausalLM:
    """Spread the decoder layers over the visible GPUs (accelerate)."""
    try:
        from accelerate import dispatch_model, infer_auto_device_map
    except ImportError as exc:
        raise MemoRAGError("device_map='auto' needs accelerate: pip install accelerate") from exc
    device_map = infer_auto_device_map(model, no_split_module_classes=["DecoderLayer"])
    return dispatch_model(model, device_map=device_map)


def quantize_4bit(model: BeaconForCausalLM, dtype: torch.dtype) -> BeaconForCausalLM:
    """Replace the decoder's linear layers by bitsandbytes NF4 layers (CUDA only)."""
    try:
        import bitsandbytes as bnb
    except ImportError as exc:
        raise MemoRAGError("load_in_4bit needs bitsandbytes: pip install bitsandbytes") from exc
    if not torch.cuda.is_available():
        raise MemoRAGError("load_in_4bit needs a CUDA device (bitsandbytes)")
    for parent in list(model.model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear):
                q = bnb.nn.Linear4bit(
                    child.in_features,
                    child.out_features,
                    bias=child.bias is not None,
                    compute_dtype=dtype,
                    quant_type="nf4",
                )
                q.weight = bnb.nn.Params4bit(
                    child.weight.data.cpu(), requires_grad=False, quant_type="nf4"
                )
                if child.bias is not None:
                    q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                setattr(parent, child_name, q.cuda())
    return model


def load_beacon_model(
    name_or_path: str | Path,
    *,
    cache_dir: str | None = None,
    access_token: str | None = None,
    revision: str | None = None,
    device: str | None = "auto",
    dtype: torch.dtype | str | None = None,
    load_in_4bit: bool = False,
    enable_flash_attn: bool = False,
    device_map: str | None = None,
    beacon_ratio: int | None = None,
) -> tuple[BeaconForCausalLM, Path, str]:
    """The model, the folder it came from and its revision."""
    if device_map not in (None, "auto"):
        raise InputError(f"device_map must be None or 'auto', got {device_map!r}")
    if (device_map or load_in_4bit) and not torch.cuda.is_available():
        what = "device_map='auto'" if device_map else "load_in_4bit"
        raise MemoRAGError(f"{what} needs CUDA GPUs; none is visible (use device='cpu')")
    if load_in_4bit:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise MemoRAGError("load_in_4bit needs bitsandbytes: pip install bitsandbytes") from exc
    folder, rev = resolve_folder(
        name_or_path, cache_dir=cache_dir, token=access_token, revision=revision
    )
    cfg = BeaconConfig.from_file(folder, ratio=beacon_ratio)
    where = pick_device("cuda" if device_map or load_in_4bit else device)
    dtype = pick_dtype(where, dtype)
    attention = "sdpa"
    if enable_flash_attn:
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            attention = "sdpa"  # flash-attention 2 is not installed: SDPA is equivalent
        else:
            if where.type == "cuda" and dtype in (torch.float16, torch.bfloat16):
                attention = "flash_attention_2"
    options = StepOptions(attention=attention)
    tensors = read_state_dict(folder)
    first = torch.device("cpu") if (device_map or load_in_4bit) else where
    model = build_model(cfg, tensors, device=first, dtype=dtype, options=options)
    if load_in_4bit:
        model = quantize_4bit(model, dtype)
        model.to("cuda")
    elif device_map == "auto":
        model = dispatch_auto(model)
    return model, folder, rev
