"""Random genotypes of a cell space: the random-architecture baseline of NAS evaluations (Li and
Talwalkar 2019, "Random search and reproducibility for neural architecture search"; Yang et al.
2020, "NAS evaluation is frustratingly hard").

Each drawn cell has the shape the DARTS rule derives (Liu et al. 2019, Sec. 2.4): every
intermediate node keeps `edges_per_node` distinct inputs among the states before it, each chosen
uniformly, with one op on each edge, chosen uniformly among the space's non-`none` ops; the cell
concatenates all intermediate nodes. Draws are independent, so two genotypes may coincide (in a
small space such as `tiny`).
"""

from __future__ import annotations

import torch

from nas.errors import NasError
from nas.genotype import CELL_KINDS, CellGenotype, Edge, Genotype
from nas.spaces import NUM_INPUT_NODES, CellSpace, get_space

# torch.Generator.manual_seed takes seeds up to 2**64 - 1.
_MAX_SEED = 2**64 - 1


def random_cell(space: CellSpace, generator: torch.Generator) -> CellGenotype:
    """One random cell of `space`, drawn with `generator`."""
    ops = [op for op in space.ops if op != "none"]
    nodes = []
    for node in range(space.num_nodes):
        order = torch.randperm(NUM_INPUT_NODES + node, generator=generator)
        inputs = sorted(order[: space.edges_per_node].tolist())
        picks = torch.randint(len(ops), (len(inputs),), generator=generator).tolist()
        nodes.append(tuple(Edge(ops[pick], source) for pick, source in zip(picks, inputs)))
    return CellGenotype(nodes=tuple(nodes), concat=space.concat)


def random_genotype(space: CellSpace, generator: torch.Generator) -> Genotype:
    """A random genotype of `space`: a normal and a reduction cell, drawn with `generator`."""
    normal, reduce = (random_cell(space, generator) for _ in CELL_KINDS)
    return Genotype(space.name, normal, reduce)


def sample_genotypes(space: str, count: int, seed: int) -> list[Genotype]:
    """`count` random genotypes of the registered space `space`, drawn in turn from one generator
    seeded with `seed`: the same seed gives the same list, and a smaller count its beginning.
    Raises NasError for an unknown space or a count or seed out of range."""
    for name, value, low, high in (("count", count, 1, None), ("seed", seed, 0, _MAX_SEED)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise NasError(f"{name} must be an integer, got {value!r}")
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise NasError(f"{name} must be {bound}, got {value}")
    cell_space = get_space(space)
    generator = torch.Generator().manual_seed(seed)
    return [random_genotype(cell_space, generator) for _ in range(count)]
