"""The harness's one registry: data sets, retrieval methods, commands and experiments.

- **Sets**: ``DATA`` is the one data path (``../shared/data`` beside the repository, or
  ``$MEMORAG_BENCH_DATA``); ``data_dir(name)`` resolves a set by name.
- **Methods**: ``METHODS`` is the one table, name -> the shipped pipeline's settings. A method
  with ``options=None`` searches the index alone (the query only); any other runs
  ``MemoRAG(**options)`` over the same memory and index. ``search`` is the index's search
  mode, ``keys`` a corpus-blind key writer (``benchmarks.baselines``) whose outputs are passed
  as ``extra_queries``. The retrieval command crosses methods with a search-mode and a scorer
  axis (``benchmarks.retrieval``).
- **Commands**: ``command(name, about)`` registers a ``main(argv)`` under
  ``python -m benchmarks NAME``.
- **Experiments**: ``experiment(Experiment(...))`` registers an id: the harness command lines
  that produce it, the recorded result under ``benchmarks/results/ID/``, the numbers the docs
  quote from it (dotted paths into its JSON) and the expected wall time. ``python -m
  benchmarks reproduce ID`` reruns it and prints each number beside the recorded one.

Modules register themselves when imported; ``MODULES`` lists them (a listed module that does
not exist yet is skipped).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEMORAG_BENCH_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "benchmarks" / "results"
REPORTS = REPO / "benchmarks" / "reports"
CACHE = REPO / "benchmarks" / ".cache"
#: Where ``heads dump`` writes its recordings (large; not committed).
DUMPS = RESULTS / "dumps"
#: The sets whose numbers may choose settings; the others are the untuned checks.
TUNED_SETS = ("hotpotqa", "qmsum")
#: Modules that register commands and experiments (imported by ``load``).
MODULES = (
    "benchmarks.retrieval",
    "benchmarks.heads",
    "benchmarks.engine",
    "benchmarks.answers",
    "benchmarks.stores",
    "benchmarks.generation",
)


def data_dir(name: str) -> Path:
    """The folder of set ``name`` under ``DATA`` (or ``name`` itself if it is a folder)."""
    path = Path(name)
    if path.is_dir():
        return path
    folder = DATA / name
    if not (folder / "questions.jsonl").is_file():
        known = sorted(p.name for p in DATA.iterdir()) if DATA.is_dir() else []
        raise SystemExit(f"no data set {name!r} under {DATA} (known: {known})")
    return folder


# ------------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class Method:
    """One retrieval method: the pipeline settings it runs with."""

    name: str
    options: Mapping[str, Any] | None  # MemoRAG options; None: the index alone
    search: str = "dense"  # dense | bm25 | hybrid: the index's search mode
    keys: str = ""  # "" | hyde | multi_query: corpus-blind extra queries
    about: str = ""

    @property
    def reads_memory(self) -> bool:
        """Whether the method needs a memory (the query-only ones and HyDE do not)."""
        return self.options is not None and not self.keys


_BLIND = {"retrieval": "clues", "clue_strategy": "none", "fusion": "interleave"}
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("dense", None, about="the query alone on the engine's dense index"),
        Method("bm25", None, "bm25", about="the query alone, BM25 over the same chunks"),
        Method("hybrid", None, "hybrid", about="the query alone, RRF of dense and BM25"),
        Method(
            "hyde", _BLIND, keys="hyde", about="the query + a passage drafted without the corpus"
        ),
        Method(
            "multi_query",
            _BLIND,
            keys="multi_query",
            about="the query + 3 rewrites written without the corpus",
        ),
        Method("clues", {"retrieval": "clues"}, about="the clue route: copied + surrogate clues"),
        Method(
            "heads+clues", {"retrieval": "heads+clues"}, about="the heads, the clues, the query"
        ),
        Method(
            "heads",
            {"retrieval": "heads", "query_weight": 0.0, "heads_weighting": "fixed"},
            about="the heads' list alone",
        ),
        Method("default", {}, about="MemoRAG() as shipped: heads + dense query, z-score"),
    )
}


# ------------------------------------------------------------------------------ commands

Main = Callable[[Sequence[str] | None], Any]
COMMANDS: dict[str, tuple[str, Main]] = {}


def command(name: str, about: str) -> Callable[[Main], Main]:
    """Register ``main(argv)`` as ``python -m benchmarks NAME``."""

    def register(fn: Main) -> Main:
        if name in COMMANDS:
            raise ValueError(f"benchmark command {name!r} registered twice")
        COMMANDS[name] = (about, fn)
        return fn

    return register


# --------------------------------------------------------------------------- experiments


@dataclass(frozen=True)
class Number:
    """One number the docs quote: ``path`` into the recorded JSON (``fresh``: into a rerun's,
    where the rerun's layout differs), multiplied by ``scale`` and printed with ``fmt``."""

    label: str
    path: str
    fmt: str = "{:.3f}"
    fresh: str | None = None
    scale: float = 1.0  # the value is multiplied by this before printing (bytes -> MiB)


@dataclass(frozen=True)
class Step:
    """One harness command line (the words after ``python -m benchmarks``); skipped when
    ``unless`` (relative to the repository) exists already. ``{out}`` is the output folder."""

    args: str
    unless: str = ""


@dataclass(frozen=True)
class Experiment:
    """An experiment id: how to rerun it, where its recorded result is, what the docs quote."""

    id: str
    about: str
    steps: tuple[Step, ...]
    result: str  # the result file, in benchmarks/results/ID/ and in a rerun's output folder
    numbers: tuple[Number, ...]
    minutes: float  # expected wall time of all steps on this project's 2-core CPU
    sets: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    note: str = ""
    files: tuple[str, ...] = field(default=())  # other files of the recorded result

    @property
    def folder(self) -> Path:
        return RESULTS / self.id

    @property
    def recorded(self) -> Path:
        return self.folder / self.result


EXPERIMENTS: dict[str, Experiment] = {}


def experiment(exp: Experiment) -> Experiment:
    """Register an experiment id (ids are unique)."""
    if exp.id in EXPERIMENTS:
        raise ValueError(f"experiment {exp.id!r} registered twice")
    unknown = set(exp.methods) - set(METHODS)
    if unknown:
        raise ValueError(f"experiment {exp.id!r} names unknown methods {sorted(unknown)}")
    EXPERIMENTS[exp.id] = exp
    return exp


def pick(payload: Any, path: str) -> Any:
    """The value at a dotted ``path`` (list indices as numbers) in a loaded JSON value."""
    value = payload
    for part in path.split("."):
        if isinstance(value, list):
            value = value[int(part)]
        elif isinstance(value, Mapping) and part in value:
            value = value[part]
        else:
            raise KeyError(f"{path!r}: no {part!r}")
    return value


def load() -> None:
    """Import every module in ``MODULES`` that exists (each registers itself)."""
    import importlib
    import importlib.util

    for name in MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)


# ------------------------------------------------------------------ the experiments quoted

NOVEL_MEMORY = "benchmarks/.cache/novel-memory"
_DUMPS = (
    ("dump_hotpotqa", "--set hotpotqa --limit 100"),
    ("dump_musique", "--set musique --limit 50"),
    (
        "dump_qmsum",
        "--set qmsum --scopes TS3010a IS1006a ES2006a TS3010b TS3010d ES2009b --per-scope 6 "
        "--limit 40",
    ),
    ("dump_hotpotqa_pooled", "--set hotpotqa --setting pooled --start 12 --limit 30"),
    ("dump_musique_pooled", "--set musique --setting pooled --limit 20"),
    ("dump_needles", f"--set longbook_needles --limit 40 --save-memory {NOVEL_MEMORY}"),
)
_DUMP_STEPS = tuple(
    Step(f"heads-dump {args} --name {name}", unless=f"benchmarks/results/dumps/{name}.json")
    for name, args in _DUMPS
)
_STUDY_SETS = (
    ("HotpotQA (100, out of fold)", "dump_hotpotqa"),
    ("QMSum (31)", "dump_qmsum"),
    ("pooled HotpotQA (30, out of fold)", "dump_hotpotqa_pooled"),
    ("MuSiQue (50, untuned)", "dump_musique"),
    ("pooled MuSiQue (20, untuned)", "dump_musique_pooled"),
    ("needles (28, untuned)", "dump_needles"),
)
_MIB = 1 / 2**20
_QWEN = "TommyChien/memorag-qwen2-7b-inst (Qwen2-7B-Instruct)"

for _exp in (
    Experiment(
        id="heads-study",
        about="the shipped heads default against dense, chosen offline (144-cell grid)",
        steps=(
            *_DUMP_STEPS,
            Step(
                "heads-study --train dump_hotpotqa --tune dump_qmsum dump_hotpotqa_pooled "
                "--test dump_musique dump_musique_pooled dump_needles --tops 4 8 12 "
                "--weights 0.5 1 2 3 --norms sum mean lift --name heads_study --out {out}"
            ),
        ),
        result="heads_study.json",
        numbers=tuple(
            n
            for label, dump in _STUDY_SETS
            for n in (
                Number(f"{label}: default R@5", f"chosen.{dump}.r@5"),
                Number(f"{label}: dense R@5", f"dense.{dump}.r@5"),
                Number(f"{label}: default - dense R@5, CI low", f"chosen.{dump}.r@5_vs_dense.1"),
                Number(f"{label}: default - dense R@5, CI high", f"chosen.{dump}.r@5_vs_dense.2"),
                Number(f"{label}: default - dense MRR", f"chosen.{dump}.mrr_vs_dense.0"),
            )
        ),
        minutes=75,
        sets=("hotpotqa", "musique", "qmsum", "longbook_needles"),
        methods=("dense", "default"),
        note="six recordings (about 1 h, kept in benchmarks/results/dumps/), then the grid "
        "(a minute); a rerun with the recordings present runs the grid only",
    ),
    Experiment(
        id="heads-latency-novel",
        about="the heads pass and retrieve on the whole 101k-token novel's memory",
        steps=(
            Step(
                f"heads-dump {_DUMPS[5][1]} --name dump_needles",
                unless=NOVEL_MEMORY,
            ),
            Step(
                f"heads-latency --memory {NOVEL_MEMORY} --repeats 5 --name heads_latency_real "
                "--out {out}"
            ),
        ),
        result="heads_latency_real.json",
        numbers=(
            Number("tokens read", "tokens_read", "{:,}"),
            Number("entries per layer and KV head", "entries", "{:,}"),
            Number('heads pass ("N/A" cached), median s', "pass.median_s", "{:.2f}"),
            Number("first query on a memory, median s", "first.median_s", "{:.2f}"),
            Number("all of retrieve, median s", "retrieve.median_s", "{:.2f}"),
        ),
        minutes=40,
        sets=("longbook_needles",),
        methods=("default",),
        note="memorizes the novel first (about 30 min) unless its saved memory exists",
    ),
    Experiment(
        id="e2e-musique-check",
        about="the shipped MemoRAG() end to end on 12 MuSiQue questions (equals the study)",
        steps=(
            Step(
                "retrieval --set musique --limit 12 --methods dense default heads "
                "--name e2e_musique_check --out {out}"
            ),
        ),
        result="e2e_musique_check.json",
        numbers=(
            Number("dense R@5", "summary.dense.r@5"),
            Number("default R@5", "summary.default.r@5"),
            Number("default MRR", "summary.default.mrr"),
            Number("heads alone R@5", "summary.heads.r@5"),
        ),
        minutes=8,
        sets=("musique",),
        methods=("dense", "default", "heads"),
    ),
    Experiment(
        id="clues-hotpotqa-context",
        about="the clue route against dense, HotpotQA questions 13-42",
        steps=(
            Step(
                "retrieval --set hotpotqa --start 12 --limit 30 --methods dense clues "
                "--name heads_hotpotqa_context_clues --out {out}"
            ),
        ),
        result="heads_hotpotqa_context_clues.json",
        numbers=(
            Number("dense R@5", "summary.dense.r@5"),
            Number("clues R@5", "summary.clues.r@5"),
            Number("clues - dense MRR", "summary.clues.mrr_vs_dense.0"),
            Number("clues query s (median)", "summary.clues.query_s", "{:.1f}"),
        ),
        minutes=15,
        sets=("hotpotqa",),
        methods=("dense", "clues"),
    ),
    Experiment(
        id="clues-musique-context",
        about="the clue route against dense, MuSiQue questions 1-30",
        steps=(
            Step(
                "retrieval --set musique --limit 30 --methods dense clues "
                "--name heads_musique_context_clues --out {out}"
            ),
        ),
        result="heads_musique_context_clues.json",
        numbers=(
            Number("dense R@5", "summary.dense.r@5"),
            Number("clues R@5", "summary.clues.r@5"),
            Number("clues - dense R@5, CI low", "summary.clues.r@5_vs_dense.1"),
            Number("clues - dense R@5, CI high", "summary.clues.r@5_vs_dense.2"),
            Number("clues query s (median)", "summary.clues.query_s", "{:.1f}"),
        ),
        minutes=15,
        sets=("musique",),
        methods=("dense", "clues"),
    ),
    Experiment(
        id="baselines-needles",
        about="query-only baselines on the 28 needles of the 101k-token novel",
        steps=(
            Step(
                "retrieval --set longbook_needles --limit 40 --methods dense bm25 hybrid hyde "
                "multi_query --name heads_needles_context_keys28 --out {out}"
            ),
        ),
        result="heads_needles_context_keys28.json",
        numbers=tuple(
            Number(f"{m} R@5", f"summary.{m}.r@5")
            for m in ("dense", "bm25", "hybrid", "hyde", "multi_query")
        ),
        minutes=20,
        sets=("longbook_needles",),
        methods=("dense", "bm25", "hybrid", "hyde", "multi_query"),
    ),
    Experiment(
        id="scorers-hotpotqa-pooled",
        about="which KV entries a ratio-16 memory keeps, judged by the heads (pooled HotpotQA)",
        steps=(
            Step(
                "retrieval --set hotpotqa --shuffle --limit 30 --setting pooled --compress always "
                "--ratio 16 --scorers key_norm key_norm_cover stride --methods dense heads "
                "default --name selection_pooled_hotpotqa --out {out}"
            ),
        ),
        result="selection_pooled_hotpotqa.json",
        numbers=tuple(
            Number(f"{m} R@5, {s}", f"summary.{s}.{m}.r@5", fresh=f"summary.{m}/{s}.r@5")
            for s in ("key_norm", "key_norm_cover", "stride")
            for m in ("heads", "default")
        ),
        minutes=30,
        sets=("hotpotqa",),
        methods=("dense", "heads", "default"),
        note="recorded with the previous head set (8 heads) and fixed heads_weight 1; a rerun "
        "uses today's head set and default",
    ),
    Experiment(
        id="memory-engine",
        about="memorize throughput, memory bytes and peak RSS, 8k-128k tokens",
        steps=(Step("memory --threads 1 --out {out}"),),
        result="memory_bench.json",
        numbers=(
            Number("8k plain prefill tok/s", "rows.0.tokens_per_second", "{:.0f}"),
            Number("8k plain prefill peak RSS MiB", "rows.0.peak_rss_mib", "{:,.0f}"),
            *(
                n
                for i, label in ((3, "8k ratio 4"), (4, "8k ratio 8"), (9, "32k ratio 8"))
                for n in (
                    Number(f"{label} tok/s", f"rows.{i}.tokens_per_second", "{:.0f}"),
                    Number(f"{label} memory MiB", f"rows.{i}.memory_bytes", "{:.0f}", scale=_MIB),
                    Number(
                        f"{label} full KV MiB", f"rows.{i}.full_kv_bytes", "{:,.0f}", scale=_MIB
                    ),
                    Number(f"{label} peak RSS MiB", f"rows.{i}.peak_rss_mib", "{:,.0f}"),
                )
            ),
            Number("128k ratio 32 tok/s", "rows.16.tokens_per_second", "{:.0f}"),
            Number("128k ratio 32 memory MiB", "rows.16.memory_bytes", "{:.0f}", scale=_MIB),
            Number("128k ratio 32 full KV MiB", "rows.16.full_kv_bytes", "{:,.0f}", scale=_MIB),
            Number("128k ratio 32 peak RSS MiB", "rows.16.peak_rss_mib", "{:,.0f}"),
            Number(
                "8k ratio 4 vs plain prefill", "analysis.checks.1.throughput_vs_prefill", "{:.2f}"
            ),
            Number(
                "8k ratio 8 vs plain prefill", "analysis.checks.2.throughput_vs_prefill", "{:.2f}"
            ),
            Number("memorize time exponent", "analysis.time_exponent_all", "{:.2f}"),
        ),
        minutes=35,
        note="each configuration in its own process; the grid is 8k, 32k, 128k x ratios 1, 4, 8 "
        "with the next ratio that fits where one is refused",
    ),
    Experiment(
        id="kv-per-token",
        about="KV bytes per token: measured on SmolLM2, computed for the 7B checkpoints",
        steps=(Step("kv-per-token --tokens 1024 --out {out}"),),
        result="kv_per_token.json",
        numbers=(
            Number("tokens read", "measured_smollm2.0.tokens", "{:,}"),
            Number("ratio 1 entries", "measured_smollm2.0.kv_entries", "{:,}"),
            Number("ratio 1 bytes", "measured_smollm2.0.memory_bytes", "{:,}"),
            Number("ratio 4 entries", "measured_smollm2.1.kv_entries", "{:,}"),
            Number("ratio 4 bytes", "measured_smollm2.1.memory_bytes", "{:,}"),
            Number("bytes per entry", "measured_smollm2.1.bytes_per_kv_entry", "{:,.0f}"),
            Number("Qwen2-7B bytes per token (bf16)", f"computed.{_QWEN}.bytes_per_token", "{:,}"),
        ),
        minutes=2,
    ),
    Experiment(
        id="speed",
        about="plain prefill vs memorize at ratio 4, and decode, on 4,096 tokens",
        steps=(Step("speed --threads 1 --out {out}"),),
        result="speed.json",
        numbers=(
            Number("plain prefill tok/s", "plain_prefill_tokens_per_s", "{:.0f}"),
            Number("memorize tok/s", "memorize_tokens_per_s", "{:.0f}"),
            Number("memorize / plain prefill", "memorize_vs_prefill", "{:.2f}"),
            Number("decode tok/s", "decode_tokens_per_s", "{:.1f}"),
            Number("load average at start", "env.loadavg_start.0", "{:.1f}"),
        ),
        minutes=2,
        note="torch threads compete with every other process on the cores: compare the "
        "memorize / prefill ratio, and the load average, not the raw rates",
    ),
):
    experiment(_exp)
experiment(
    Experiment(
        id="beacon-parity-cpu",
        about="the native beacon memory replays the upstream fixtures in fp32 and bf16 (CPU)",
        steps=(
            Step("gpu-check --device cpu --tiny --bf16 --lengths 64 --gen-tokens 2 --out {out}"),
        ),
        result="gpu_check_tiny.json",
        numbers=(
            Number("fp32 worst |logit difference|", "parity.0.worst_abs_diff", "{:.1e}"),
            Number("bf16 worst |logit difference|", "parity.1.worst_abs_diff", "{:.3f}"),
            Number("largest |logit| of the fixtures", "parity.1.max_abs_logit", "{:.1f}"),
        ),
        minutes=1,
        note="greedy ids equal (bf16): parity.1.greedy_ids_equal in the result",
    )
)
