"""Benchmark harness: data loading, metrics and baselines (not part of the installed package)."""
