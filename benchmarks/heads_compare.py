"""The shipped default (rebuilt from a ``heads_dump`` recording) against the baselines of
``heads_eval`` runs on the same questions, with paired bootstrap CIs.

The default is the ``heads_study`` cell the shipped config uses: 4 heads chosen on the
HotpotQA recording (out of fold for HotpotQA questions), agreement weighting, heads_weight 2::

    python -m benchmarks.heads_compare --dump dump_needles \\
        --runs benchmarks/results/heads_needles_context_keys28.json --name heads_needles_compare
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks import heads_study as hs
from shared_core.config import MemoRAGConfig
from shared_core.heads.head_set import shipped_head_sets

#: Methods that do not depend on the head set (query-only searches and the clue routes).
BASELINES = ("dense", "bm25", "hybrid", "hyde", "multi_query", "clues", "heads+clues")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump", required=True)
    parser.add_argument("--runs", nargs="+", type=Path, required=True)
    parser.add_argument("--train", default="dump_hotpotqa")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(BASELINES),
        help="rows to take from the runs (older runs' heads rows used older head sets)",
    )
    parser.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    cfg = MemoRAGConfig()
    top = len(shipped_head_sets()[0].heads)
    choice = hs.HeadChoice(hs.questions(args.train), top, "sum", 5)
    by_id = {q.id: q for q in hs.questions(args.dump)}
    rows: dict[str, dict] = {}
    for run in args.runs:
        for row in json.loads(run.read_text())["rows"]:
            if row["id"] in by_id:
                rows.setdefault(row["id"], {}).update(row)
    ids = list(rows)
    qs = {i: by_id[i] for i in ids}
    methods: list[str] = []
    for row in rows.values():
        methods += [m for m, v in row.items() if isinstance(v, dict) and "mrr" in v]
    methods = [m for m in dict.fromkeys(methods) if m in args.methods]

    def default_on(subset: list[str]) -> list[dict[str, float]]:
        picked = [qs[i] for i in subset]
        return hs.evaluate_choice(picked, choice, cfg.heads_weight, "sum", cfg.heads_weighting)

    command = "python -m benchmarks.heads_compare " + " ".join(argv or sys.argv[1:])
    lines = [
        f"# The shipped default against the baselines: `{args.dump}`",
        "",
        f"Command: `{command}`  ",
        f"The default is rebuilt from the recording ({top} heads, {cfg.heads_weighting} "
        f"weighting, heads_weight {cfg.heads_weight}); each other row comes from the runs "
        "named, on the questions it ran (n), against the default on the same questions.",
        "",
        "| method | n | R@5 | MRR | default R@5 / MRR | default − method R@5 [95% CI] | MRR |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        subset = [i for i in ids if m in rows[i]]
        default = default_on(subset)
        other = [{"r@5": rows[i][m]["r@5"], "mrr": rows[i][m]["mrr"]} for i in subset]
        d5, dm = hs.ci(default, other, "r@5"), hs.ci(default, other, "mrr")
        lines.append(
            f"| {m} | {len(subset)} | {hs.mean(other, 'r@5'):.3f} | {hs.mean(other, 'mrr'):.3f} "
            f"| {hs.mean(default, 'r@5'):.3f} / {hs.mean(default, 'mrr'):.3f} "
            f"| {d5[0]:+.3f} [{d5[1]:+.3f}, {d5[2]:+.3f}] "
            f"| {dm[0]:+.3f} [{dm[1]:+.3f}, {dm[2]:+.3f}] |"
        )
    text = "\n".join(lines) + "\n"
    (hs.RESULTS / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
