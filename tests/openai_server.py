"""A real OpenAI-compatible server for the tests: ``transformers serve`` over the converted
embedded SmolLM2 folder, offline, on a free 127.0.0.1 port; started within a deadline and
stopped after. If it cannot start here, ``start_server`` skips the test and says why."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Seconds the server may take to load the model and answer /health.
START_DEADLINE_S = 120.0

_LAUNCH = (
    "import sys; from transformers.cli.transformers import main; "
    "sys.argv = ['transformers', 'serve', *sys.argv[1:]]; sys.exit(main())"
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running ``transformers serve`` process."""

    process: subprocess.Popen[bytes]
    port: int
    model: str
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        """Kill the server (no graceful shutdown: also used to simulate a crash)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)

    def log_tail(self, chars: int = 1500) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
            return json.loads(reply.read()).get("status") == "ok"
    except (OSError, ValueError):
        return False


def start_server(model_dir: str | Path) -> Server:
    """Start ``transformers serve model_dir`` offline; ``pytest.skip`` if it cannot start."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"transformers serve needs transformers[serving] (fastapi, uvicorn): {exc}")
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="memorag-serve-", suffix=".log")[1])
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",  # on a busy 2-core machine, 2 spinning threads are far slower
        "TOKENIZERS_PARALLELISM": "false",
    }
    args = [str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    args += ["--log-level", "info"]  # the access log lets tests count requests
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    server = Server(process=process, port=port, model=str(model_dir), log=log)
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.skip(f"transformers serve exited with {process.returncode}: {server.log_tail()}")
        if _healthy(port):
            return server
        time.sleep(0.5)
    server.stop()
    pytest.skip(f"transformers serve did not start within {START_DEADLINE_S:g} s")
