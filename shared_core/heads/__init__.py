"""Memory-native retrieval: a few attention heads of the memory model point at the evidence.

``head_set`` (which heads, per model, as data), ``ranker`` (chunks ranked by the heads' mass
on the memory entries they came from), ``route`` (heads, clues or both per query),
``calibration`` (choosing heads from questions with gold evidence).
"""
