"""How many intra-op threads the query pass (and its per-chunk sums) uses on CPU.

The pass's products are a few query rows wide, so splitting them over threads gains little,
and on a busy CPU every parallel region waits for a descheduled thread. Measured on the
project's 2-core machine at load 8-10: one ``[18, 576] x [576, 1536]`` linear took 36 ms on 2
threads and 0.5 ms on 1; the heads pass over 7,700 entries took 5-6 s on 2 threads and under
1 s on 1 (docs/heads.md, "Latency").
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

#: Intra-op threads for a query pass on CPU (``None``: leave torch's setting).
PASS_THREADS: int | None = 1
_lock = threading.Lock()
_state = {"users": 0, "saved": 0}


@contextmanager
def pass_threads(device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block with at most ``PASS_THREADS`` intra-op threads on CPU.

    The first pass in records torch's setting and the last one out restores it, so passes in
    several threads never leave the process at the cap.
    """
    cap = PASS_THREADS
    if cap is None or torch.device(device).type != "cpu":
        yield
        return
    with _lock:
        if _state["users"] == 0:
            _state["saved"] = torch.get_num_threads()
        _state["users"] += 1
        if torch.get_num_threads() > cap:
            torch.set_num_threads(cap)
    try:
        yield
    finally:
        with _lock:
            _state["users"] -= 1
            if _state["users"] == 0 and _state["saved"] > cap:
                torch.set_num_threads(_state["saved"])
