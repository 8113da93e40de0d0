"""Clues: what the memory writes to drive retrieval (spans, surrogate questions, drafts).

``writers`` (one strategy per class, chosen by name), ``parsing`` (bounded output cleaning),
``copying`` (decoding constrained to verbatim spans of the corpus), ``anchoring`` (each clue
searched as the query plus its new words), ``followups`` (history-dependent questions made
standalone).
"""

from shared_core.clues.anchoring import ANCHORED_KINDS, anchor_clues, novel_words
from shared_core.clues.copying import CopySource, SpanCopier
from shared_core.clues.followups import resolve_followup
from shared_core.clues.parsing import parse_clue_lines
from shared_core.clues.writers import (
    ClueWriter,
    CompositeClueWriter,
    DraftAnswerClues,
    NoClues,
    SpanClues,
    SurrogateClues,
    make_clue_writer,
)

__all__ = [
    "ANCHORED_KINDS",
    "ClueWriter",
    "CompositeClueWriter",
    "CopySource",
    "DraftAnswerClues",
    "NoClues",
    "SpanClues",
    "SpanCopier",
    "SurrogateClues",
    "anchor_clues",
    "make_clue_writer",
    "novel_words",
    "parse_clue_lines",
    "resolve_followup",
]
