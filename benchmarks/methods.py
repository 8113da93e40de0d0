"""The quality suite's retrieval methods (baselines, MemoRAG, ablations) and run sizes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_CACHE = REPO / "benchmarks" / ".cache"

#: Questions per set with ``--limit`` unset (sized for < 1 h on 2 CPU cores, see docs).
DEFAULT_LIMITS: dict[str, int] = {
    "hotpotqa": 12,
    "musique": 8,
    "qmsum": 6,
    "longbook_needles": 10,
}
#: Fallback for a data folder with another name.
DEFAULT_LIMIT = 8
#: Paid ablations (new memories or generations) run on the first N questions of the tuning
#: sets only; the free ones (clue kinds that ``memorag`` already wrote) run everywhere.
DEFAULT_ABLATION_LIMITS: dict[str, int] = {"hotpotqa": 6, "qmsum": 3}
#: The gist memory writes a summary per 1k tokens: the costliest ablation (HotpotQA only).
GIST_LIMITS: dict[str, int] = {"hotpotqa": 4}
#: Answers are generated for the first N questions of each sample.
DEFAULT_GEN_LIMIT = 6
#: Sets whose numbers may be used to choose settings; the others are the untuned check.
TUNED_SETS = ("hotpotqa", "qmsum")
KS = (2, 5, 10)
DEPTH = 10  # fused list length = max k
GEN_K = 3  # passages shown to the generator
QUERY_WEIGHT = 2.0  # the pipeline default
SWEEP_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
RATIO_LADDER = (1, 2, 4, 8, 16, 32, 64)
#: Memories of more text tokens than this are saved to the cache (smaller ones are re-read).
PERSIST_TOKENS = 24_000


@dataclass(frozen=True)
class Method:
    """One retrieval method. ``keys`` says where the extra retrieval keys come from."""

    name: str
    family: str  # baseline | memorag | ablation
    keys: str  # none | hyde | multi_query | clues
    search: str = "dense"  # dense | bm25
    clue_strategy: str = "copy+surrogate"  # the pipeline's default
    fusion: str | None = None  # None: the pipeline's default (interleave)
    memory: str = "compressed_kv"  # compressed_kv | gist | blind (no memory)
    ratio: int = 4
    fallback: bool = False  # use the next ratio that fits when ``ratio`` is refused
    generate: bool = False  # answer questions with this method's passages
    anchored: bool = True  # clues searched as ``query + their new words`` (pipeline default)
    description: str = ""

    @property
    def limited(self) -> bool:
        """Runs on the ablation subset only (costs model time beyond the main methods)."""
        return self.family in ("ablation", "fix") and self.name not in FREE_ABLATIONS


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("dense", "baseline", "none", generate=True, description="query only, dense"),
        Method("bm25", "baseline", "none", "bm25", generate=True, description="query only, BM25"),
        Method(
            "hyde",
            "baseline",
            "hyde",
            generate=True,
            description="query + a passage drafted without the corpus",
        ),
        Method(
            "multi_query",
            "baseline",
            "multi_query",
            generate=True,
            description="query + 3 rewrites written without the corpus",
        ),
        Method(
            "memorag",
            "memorag",
            "clues",
            fallback=True,
            generate=True,
            description="the pipeline's defaults: copied-span and surrogate clues from the "
            "compressed memory (ratio 4), each searched anchored to the query, interleaved",
        ),
        Method(
            "memorag_r1",
            "ablation",
            "clues",
            memory="compressed_kv",
            ratio=1,
            description="full KV memory (ratio 1)",
        ),
        Method("memorag_r8", "ablation", "clues", ratio=8, description="memory at ratio 8"),
        Method("memorag_gist", "ablation", "clues", memory="gist", description="gist memory"),
        Method(
            "memorag_span",
            "ablation",
            "clues",
            clue_strategy="span",
            fallback=True,
            description="free-written span clues only (no copying)",
        ),
        Method(
            "memorag_surrogate",
            "ablation",
            "clues",
            clue_strategy="surrogate",
            fallback=True,
            description="surrogate questions only",
        ),
        Method(
            "memorag_answer",
            "ablation",
            "clues",
            clue_strategy="answer",
            fallback=True,
            description="draft answer only",
        ),
        Method(
            "memorag_all",
            "ablation",
            "clues",
            clue_strategy="copy+surrogate+answer",
            fallback=True,
            description="all three clue kinds",
        ),
        Method(
            "blind",
            "ablation",
            "clues",
            memory="blind",
            description="the same clue writers (spans still copied from the text), model "
            "without the memory",
        ),
        Method(
            "memorag_free",
            "ablation",
            "clues",
            clue_strategy="span+surrogate",
            fallback=True,
            description="free-written span + surrogate clues (no copying), anchored, interleaved",
        ),
        Method(
            "memorag_rrf",
            "ablation",
            "clues",
            fusion="rrf",
            fallback=True,
            description="memorag's keys fused by weighted RRF (query 2, k=60) instead of "
            "interleaving",
        ),
        Method(
            "memorag_unanchored",
            "ablation",
            "clues",
            anchored=False,
            fallback=True,
            description="memorag's clues searched on their own, not anchored (the first "
            "round-2 default)",
        ),
        Method(
            "memorag_free_rrf",
            "ablation",
            "clues",
            clue_strategy="span+surrogate",
            fusion="rrf",
            anchored=False,
            fallback=True,
            description="round-1 defaults: free-written clues searched alone, RRF",
        ),
        Method(
            "memorag_copy_only",
            "fix",
            "clues",
            clue_strategy="copy",
            fallback=True,
            description="copied span clues only",
        ),
    )
}
#: Ablations whose clues are a subset of ``memorag``'s (cached): free, so run on every question.
FREE_ABLATIONS = (
    "memorag_surrogate",
    "memorag_copy_only",
    "memorag_unanchored",
    "memorag_rrf",
)
MAIN_METHODS = ("dense", "bm25", "hyde", "multi_query", "memorag")
ABLATIONS = tuple(name for name, m in METHODS.items() if m.family in ("ablation", "fix"))
#: Methods run in the pooled setting (memory-free keys are shared with the context setting).
POOLED_METHODS = (*MAIN_METHODS, *FREE_ABLATIONS)
