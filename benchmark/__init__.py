"""FlowDistill-Bench harness: datasets, protocols, metrics, trainer, records.

The harness knows nothing about any particular model: models are found through
:mod:`benchmark.models`' registry.
"""

__version__ = "0.1.0"
