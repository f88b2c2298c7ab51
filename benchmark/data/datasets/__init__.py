"""The built-in datasets, one module each; importing this package imports every module in it,
and each registers its dataset(s) with :func:`benchmark.data.catalogue.register_dataset`.

A new dataset is one new module here (docs/extending.md); modules whose names start with ``_``
hold code shared by several datasets and register nothing.
"""

import importlib
import pkgutil


def import_all() -> None:
    """Import every dataset module on this package's ``__path__`` (each registers itself);
    modules already imported are not run again."""
    for m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not m.name.startswith("_"):
            importlib.import_module(f"{__name__}.{m.name}")


import_all()
