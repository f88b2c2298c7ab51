"""The paper's tables and figures from run records (``python -m paper.build``), and its sweeps
and ``flowdistill reproduce`` profiles (``experiments/``, package data)."""
