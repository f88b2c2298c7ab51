"""The built-in datasets, one module each; importing this package imports every module in it,
and each registers its dataset(s) with :func:`benchmark.data.registry.register_dataset`.

A new dataset is one new module here (docs/extending.md); modules whose names start with ``_``
hold code shared by several datasets and register nothing.
"""

import importlib
import pkgutil

for _m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")
