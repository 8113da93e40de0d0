"""The benchmark harness: ``python -m benchmarks COMMAND`` (see ``benchmarks/__main__.py``).

Not part of the installed package. One registry (``registry``) of data sets, methods, commands
and experiment ids; results under ``benchmarks/results/ID/``, dated reports under
``benchmarks/reports/``.
"""
