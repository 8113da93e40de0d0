"""Clues: what the memory writes to drive retrieval (spans, surrogate questions, drafts)."""
