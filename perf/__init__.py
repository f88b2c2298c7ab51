"""Efficiency benchmarks: pytest-benchmark forward latency (``pytest perf
--benchmark-only``) and the latency / memory vs N scaling run (``python -m perf.scaling``).
"""
