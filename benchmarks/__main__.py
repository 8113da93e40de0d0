"""``python -m benchmarks COMMAND ...``: the one benchmark harness.

Commands (``python -m benchmarks list`` prints them with the experiments)::

    retrieval      evidence recall of methods x search modes x scorers on one set
    heads-dump     record every head's attention per chunk (for heads-study)
    heads-study    choose heads and fusion offline from the recordings
    heads-latency  the heads pass and retrieve on a ~100k-token memory
    speed | memory | kv-per-token   the engine's cost
    gpu-check      the native beacon memory on CUDA
    list           every command and experiment id, with its expected time
    show ID        an experiment: its steps, recorded result and quoted numbers
    reproduce ID   rerun an experiment; prints each new number beside the recorded one

Every number in the README and ``docs/`` carries an experiment id (``[exp: ID]``) defined in
``benchmarks.registry.EXPERIMENTS``; its recorded result is in ``benchmarks/results/ID/``.

Adding a benchmark module (e.g. ``benchmarks/answers.py``): name it in ``registry.MODULES``
(``answers`` and ``stores`` are listed already), then in the module::

    from benchmarks.registry import Experiment, Number, Step, command, experiment

    @command("answers", "answer quality of the methods on one set")
    def main(argv=None): ...

    experiment(Experiment(
        id="answers-hotpotqa", about="...", minutes=20, result="answers_hotpotqa.json",
        steps=(Step("answers --set hotpotqa --limit 20 --name answers_hotpotqa --out {out}"),),
        numbers=(Number("F1, default", "summary.default.f1"),),
    ))

and put the recorded result in ``benchmarks/results/answers-hotpotqa/``. Use
``registry.data_dir``, ``registry.METHODS`` and ``benchmarks.metrics`` (``KS``,
``summarize``, ``markdown``, ``environment``, ``write_outputs``) rather than copies.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.registry import CACHE, COMMANDS, EXPERIMENTS, REPO, Experiment, load, pick


def render(value: object, number_fmt: str, scale: float) -> str:
    """A quoted number as the docs print it (``scale`` 1 keeps an int an int)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return number_fmt.format(value * scale if scale != 1 else value)
    return str(value)


def compare(exp: Experiment, fresh: Path | None) -> list[tuple[str, str, str]]:
    """``(label, recorded, new)`` for every quoted number (``new`` empty without a rerun)."""
    recorded = json.loads(exp.recorded.read_text(encoding="utf-8"))
    new = json.loads(fresh.read_text(encoding="utf-8")) if fresh is not None else None
    out = []
    for n in exp.numbers:
        old = render(pick(recorded, n.path), n.fmt, n.scale)
        now = ""
        if new is not None:
            try:
                now = render(pick(new, n.fresh or n.path), n.fmt, n.scale)
            except KeyError as exc:
                now = f"(missing: {exc})"
        out.append((n.label, old, now))
    return out


def table(rows: Sequence[tuple[str, str, str]], rerun: bool) -> str:
    lines = ["| number | recorded |" + (" new |" if rerun else ""), "|---|---|" + ("---|" * rerun)]
    for label, old, now in rows:
        lines.append(f"| {label} | {old} |" + (f" {now} |" if rerun else ""))
    return "\n".join(lines)


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def show(exp: Experiment) -> str:
    steps = "\n".join(
        f"  python -m benchmarks {s.args}" + (f"  (skipped if {s.unless} exists)" * bool(s.unless))
        for s in exp.steps
    )
    return (
        f"{exp.id}: {exp.about}\n"
        f"expected time: about {exp.minutes:g} min on this project's 2-core CPU\n"
        f"sets: {', '.join(exp.sets) or '-'}; methods: {', '.join(exp.methods) or '-'}\n"
        f"recorded: {_shown(exp.recorded)}\n"
        + (f"note: {exp.note}\n" if exp.note else "")
        + f"steps:\n{steps}\n\n"
        + table(compare(exp, None), rerun=False)
    )


def reproduce(exp: Experiment, out: Path, dry_run: bool = False) -> list[tuple[str, str, str]]:
    """Run the experiment's steps into ``out`` and compare its numbers with the record.

    Steps run in the repository root (their relative paths are the repository's)."""
    out = out.resolve()
    if not dry_run:
        out.mkdir(parents=True, exist_ok=True)
    here = Path.cwd()
    os.chdir(REPO)
    try:
        _run_steps(exp, out, dry_run)
    finally:
        os.chdir(here)
    fresh = out / exp.result
    return compare(exp, fresh if fresh.is_file() else None)


def _run_steps(exp: Experiment, out: Path, dry_run: bool) -> None:
    for step in exp.steps:
        if step.unless and (REPO / step.unless).exists():
            print(f"skip (exists: {step.unless}): {step.args}", flush=True)
            continue
        argv = shlex.split(step.args.format(out=out))
        print(f"run: python -m benchmarks {' '.join(argv)}", flush=True)
        if dry_run:
            continue
        about_main = COMMANDS.get(argv[0])
        if about_main is None:
            raise SystemExit(f"{exp.id}: unknown command {argv[0]!r}")
        about_main[1](argv[1:])


def main(argv: Sequence[str] | None = None) -> None:
    load()
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0] in COMMANDS:
        COMMANDS[words[0]][1](words[1:])
        return
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="commands and experiment ids")
    sh = sub.add_parser("show", help="an experiment's steps and recorded numbers")
    sh.add_argument("id", choices=sorted(EXPERIMENTS))
    rp = sub.add_parser("reproduce", help="rerun an experiment, compare with the record")
    rp.add_argument("id", choices=sorted(EXPERIMENTS))
    rp.add_argument("--out", type=Path, help="default: benchmarks/.cache/reproduce/ID")
    rp.add_argument("--dry-run", action="store_true", help="print the steps, run nothing")
    args = p.parse_args(words)
    if args.action == "list":
        print("commands:")
        for name, (about, _) in sorted(COMMANDS.items()):
            print(f"  {name:<15} {about}")
        print("experiments (expected minutes on this 2-core CPU):")
        for exp in EXPERIMENTS.values():
            print(f"  {exp.id:<28} {exp.minutes:>5g}  {exp.about}")
    elif args.action == "show":
        print(show(EXPERIMENTS[args.id]))
    else:
        exp = EXPERIMENTS[args.id]
        out = args.out or CACHE / "reproduce" / exp.id
        print(f"{exp.id}: about {exp.minutes:g} min expected; output in {out}", flush=True)
        started = time.perf_counter()
        rows = reproduce(exp, out, args.dry_run)
        print(f"\n{exp.id} ({(time.perf_counter() - started) / 60:.1f} min)\n")
        print(table(rows, rerun=not args.dry_run))


if __name__ == "__main__":
    main()
