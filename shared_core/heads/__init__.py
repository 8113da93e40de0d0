"""Memory-native retrieval: a few attention heads of the memory model point at the evidence.

The head sets (which heads, per model, as data) are ``shared_core.head_sets``; here:
``ranker`` (chunks ranked by the heads' mass on the memory entries they came from),
``candidates`` (any store's passages located in the memory), ``route`` (heads, clues or both
per query), ``calibration`` (choosing heads from questions with gold evidence).
"""
