"""Graph (and MLP) baselines, one module per model, each registered with the harness.

Importing this package imports every module in it, which registers its models.
"""

import importlib
import pkgutil

for _m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")
