"""Cell search spaces: plain data plus a registered name.

A space says which ops an edge chooses from, how many intermediate nodes a cell has, how many edges
each node keeps in the derived genotype, and the macro skeleton (stem multiplier, where reduction
cells go). The built-in spaces are the package `nas.search_spaces`, kept in the repository's
top-level `search_spaces/` folder; to add one, add a file there that calls
`register_space(CellSpace(...))`.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from nas.errors import NasError
from nas.ops import OPS
from nas.registry import Registry

NUM_INPUT_NODES = 2  # every cell reads the outputs of the two previous cells


@dataclass(frozen=True)
class CellSpace:
    """A DARTS-style cell space.

    Attributes:
        name: registry name, written into genotypes.
        ops: candidate op names; `none` (the zero op) may be among them.
        num_nodes: intermediate nodes per cell; node i reads every earlier node.
        edges_per_node: incoming edges each node keeps when a genotype is derived.
        stem_multiplier: the stem has `stem_multiplier * channels` output channels.
        reductions: fractions (num, den) of the depth where reduction cells go: layer
            `layers * num // den`. Reduction cells halve H and W and double the channels.
    """

    name: str
    ops: tuple[str, ...]
    num_nodes: int = 4
    edges_per_node: int = 2
    stem_multiplier: int = 3
    reductions: tuple[tuple[int, int], ...] = ((1, 3), (2, 3))

    def __post_init__(self) -> None:
        unknown = [op for op in self.ops if op not in OPS]
        if unknown:
            raise ValueError(f"space {self.name!r}: unknown ops {unknown}")
        if len(set(self.ops)) != len(self.ops):
            raise ValueError(f"space {self.name!r}: repeated ops in {self.ops}")
        if [op for op in self.ops if op != "none"] == []:
            raise ValueError(f"space {self.name!r} needs at least one op other than 'none'")
        if self.num_nodes < 1:
            raise ValueError(f"space {self.name!r}: num_nodes must be at least 1")
        if not 1 <= self.edges_per_node <= NUM_INPUT_NODES:
            raise ValueError(f"space {self.name!r}: edges_per_node must be 1 or 2")

    @property
    def num_edges(self) -> int:
        """Edges in the supernet cell: node i has i + 2 incoming edges (14 for 4 nodes)."""
        return sum(NUM_INPUT_NODES + i for i in range(self.num_nodes))

    @property
    def concat(self) -> tuple[int, ...]:
        """State indices concatenated into the cell output: all intermediate nodes."""
        return tuple(range(NUM_INPUT_NODES, NUM_INPUT_NODES + self.num_nodes))

    def edge_index(self, node: int, source: int) -> int:
        """Row of the alpha matrix for the edge from state `source` into intermediate `node`."""
        return sum(NUM_INPUT_NODES + i for i in range(node)) + source

    def reduction_layers(self, layers: int) -> list[int]:
        """Layer indices of the reduction cells for a network of `layers` cells."""
        return sorted({layers * num // den for num, den in self.reductions})


def _builtin_spaces_package() -> ModuleType:
    """`nas.search_spaces`. A wheel installs it inside the package (pyproject maps the folder
    there); in a checkout it is the top-level `search_spaces/` folder beside `nas/`, loaded under
    the same name. Never the importable name `search_spaces`, which a user's folder may hold."""
    name = "nas.search_spaces"
    checkout = Path(__file__).resolve().parent.parent / "search_spaces"
    installed = Path(__file__).resolve().parent / "search_spaces"
    if name not in sys.modules and not installed.is_dir() and (checkout / "__init__.py").is_file():
        spec = importlib.util.spec_from_file_location(
            name, checkout / "__init__.py", submodule_search_locations=[str(checkout)]
        )
        assert spec is not None and spec.loader is not None
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        spec.loader.exec_module(package)
    return importlib.import_module(name)


def _load_builtin_spaces() -> None:
    package = _builtin_spaces_package()
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


SPACES: Registry[CellSpace] = Registry("search space", loader=_load_builtin_spaces)


def register_space(space: CellSpace) -> CellSpace:
    """Register `space` under its name and return it."""
    SPACES.add(space.name, space)
    return space


def get_space(name: str) -> CellSpace:
    """Return the registered space `name`. Raises NasError for an unknown name."""
    return SPACES.get(name)


def check_layers(space: CellSpace, layers: int) -> None:
    """Raise NasError unless `layers` cells fit the space's skeleton."""
    if layers < 1:
        raise NasError(f"model.layers must be at least 1, got {layers}")
    if not _fits(space, layers):
        raise NasError(
            f"model.layers={layers} is too few for space {space.name!r}: its "
            f"{len(space.reductions)} reduction cells need distinct positions after the first "
            f"cell; use at least {_min_layers(space)} layers"
        )


def _fits(space: CellSpace, layers: int) -> bool:
    """Every reduction cell has its own position after the first cell."""
    return len(set(space.reduction_layers(layers)) - {0}) == len(space.reductions)


def _min_layers(space: CellSpace) -> int:
    for layers in range(1, 1000):
        if _fits(space, layers):
            return layers
    raise ValueError(f"space {space.name!r}: reductions {space.reductions} never fit")
