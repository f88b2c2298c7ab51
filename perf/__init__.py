"""Efficiency benchmarks: pytest-benchmark forward latency (``pytest benchmarks
--benchmark-only``) and the latency / memory vs N scaling run (``python -m perf.scaling``).
"""
