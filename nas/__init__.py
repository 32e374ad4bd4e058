"""nasforge: neural architecture search for PyTorch.

The public API is what this module exports. Names resolve lazily, so `import nas` does not import
torch, TensorBoard or matplotlib until they are used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "search": "nas.api",
    "train": "nas.api",
    "grow": "nas.api",
    "sample": "nas.api",
    "create_model": "nas.api",
    "load_model": "nas.api",
    "SearchResult": "nas.api",
    "TrainResult": "nas.api",
    "GrowResult": "nas.api",
    "ImageData": "nas.data",
    "NasError": "nas.errors",
    "Config": "nas.config",
    "Genotype": "nas.genotype",
    "CellGenotype": "nas.genotype",
    "Edge": "nas.genotype",
    "parse_notation": "nas.genotype",
    "derive_genotype": "nas.genotype",
    "CellSpace": "nas.spaces",
    "register_space": "nas.spaces",
    "get_space": "nas.spaces",
    "register_op": "nas.ops",
    "OPS": "nas.ops",
    "SearchNetwork": "nas.supernet",
    "Strategy": "nas.strategies",
    "STRATEGIES": "nas.strategies",
    "DATASETS": "nas.data",
    "GENERATORS": "nas.adanet",
    "SubnetworkGenerator": "nas.adanet",
    "load_ensemble": "nas.adanet",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
