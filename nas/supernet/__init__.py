"""The differentiable supernet: mixed ops, search cells, the search network and its alphas."""

from nas.supernet.cell import MixedOp, SearchCell
from nas.supernet.network import SearchNetwork

__all__ = ["MixedOp", "SearchCell", "SearchNetwork"]
