"""``memorag calibrate-heads DATA_DIR... --model NAME --out FILE``: pick retrieval heads."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: Any, command: Any) -> None:
    """Add the ``calibrate-heads`` command to the CLI's subparsers."""
    p = command("calibrate-heads", "choose a memory model's retrieval heads from gold evidence")
    p.add_argument("data_dirs", nargs="+", metavar="DATA_DIR", help="paragraph-layout folders")
    p.add_argument("--model", default=None, help="memory model (default: embedded SmolLM2)")
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "full_kv", "beacon"),
        help="memory the heads are measured on: full KV, or the native beacon memory (auto: "
        "beacon for memorag checkpoints); no head set ships for beacon checkpoints",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the JSON")
    p.add_argument("--limit", type=int, default=40, metavar="N", help="questions per folder")
    p.add_argument("--top", type=int, default=4, metavar="N", help="heads to keep (default 4)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from shared_core.heads.calibration import calibrate_heads

    head_set = calibrate_heads(
        args.data_dirs, model=args.model, backend=args.backend, limit=args.limit, top=args.top
    )
    head_set.save(args.out)
    if args.json:
        print(json.dumps(head_set.to_json()))
    else:
        pairs = ", ".join(f"({layer},{h})" for layer, h in head_set.heads)
        print(f"wrote {args.out}: {len(head_set.heads)} heads of {head_set.model}: {pairs}")
    return 0
