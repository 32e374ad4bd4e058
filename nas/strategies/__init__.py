"""Search strategies: each is one search step plus genotype derivation, registered by name."""

from nas.strategies.base import STRATEGIES, Strategy

__all__ = ["STRATEGIES", "Strategy"]
