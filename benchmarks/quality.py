"""Quality suite: evidence recall and answer quality of MemoRAG against dense, BM25, HyDE and
multi-query retrieval, with ablations and the diagnostics that explain them.

Every method shares one embedder (all-MiniLM-L6-v2), one chunking (the pipeline's own
``TokenChunker``: 256-token chunks, 32 overlap; every source document is chunked on its own, so
HotpotQA/MuSiQue chunks are paragraphs) and one small LLM (SmolLM2-135M-Instruct) for clue
writing, HyDE, rewrites and answers. Every method runs through ``MemoRAG.retrieve`` with the same
fusion (the pipeline's default, ``interleave``: round-robin over the keys' hit lists, the raw
query first; 10 hits per key) unless its name says otherwise:

- ``dense`` / ``bm25``: the query alone, on the dense index / on BM25 over the same chunks;
- ``hyde``: the query + one passage the model drafts without the corpus;
- ``multi_query``: the query + 3 rewrites written without the corpus;
- ``memorag``: the pipeline's defaults: the query + clues (``copy+surrogate``: evidence spans
  the memory copies from the text, and surrogate questions) written by a compressed-KV memory
  of the context at ratio 4 (the smallest ratio that fits when 4 is refused), each clue searched
  anchored to the query (``query + the clue's new words``);
- ablations: ratio 1 (full KV), ratio 8, gist memory, each clue kind alone, all three kinds,
  free-written clues, clues searched unanchored, RRF fusion (the round-1 defaults: free clues,
  unanchored, RRF), and ``blind``: the same clue writers run by the model *without* the memory
  (isolates what having read the corpus adds).

Settings: ``context`` (each question's own context: its 10/20 paragraphs, its meeting, the whole
novel) and ``pooled`` (every paragraph of the set memorized as one long text and searched as one
index; HotpotQA/MuSiQue only: QMSum is one meeting per query, the novel is one document).

Model outputs are greedy, hence deterministic: every generation is cached by (model, code,
memory, prompt) under ``benchmarks/.cache/`` together with the seconds it took, so reruns skip
the model; big memories are saved there too. ``--no-cache`` recomputes everything.
"""

from benchmarks.gen_cache import CachedGenerator, CallLog, GenCache, code_fingerprint
from benchmarks.methods import (
    DEFAULT_ABLATION_LIMITS,
    DEFAULT_CACHE,
    DEFAULT_DATA,
    DEFAULT_GEN_LIMIT,
    DEFAULT_LIMITS,
    DEPTH,
    GEN_K,
    GIST_LIMITS,
    KS,
    METHODS,
    QUERY_WEIGHT,
    REPO,
    TUNED_SETS,
)
from benchmarks.render import render_markdown
from benchmarks.runner import QualityConfig, resolve_data, run_quality, run_set
from benchmarks.runtime import Runtime
from benchmarks.scoring import _grams, answer_scores, copy_rate

#: What ``benchmarks.run``, ``benchmarks.cost``, ``benchmarks.report`` and the tests use.
__all__ = [
    "DEFAULT_ABLATION_LIMITS",
    "DEFAULT_CACHE",
    "DEFAULT_DATA",
    "DEFAULT_GEN_LIMIT",
    "DEFAULT_LIMITS",
    "DEPTH",
    "GEN_K",
    "GIST_LIMITS",
    "KS",
    "METHODS",
    "QUERY_WEIGHT",
    "REPO",
    "TUNED_SETS",
    "CachedGenerator",
    "CallLog",
    "GenCache",
    "QualityConfig",
    "Runtime",
    "_grams",
    "answer_scores",
    "code_fingerprint",
    "copy_rate",
    "render_markdown",
    "resolve_data",
    "run_quality",
    "run_set",
]
