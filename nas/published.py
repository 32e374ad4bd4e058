"""Published genotypes of the DARTS space, written as data (`load_genotype` in nas/genotype.py
finds them by name).

Each cell lists its four intermediate nodes as pairs of (op, input state); every cell concatenates
states 2..5. Sources: DARTS (Liu et al., ICLR 2019) released DARTS_V1 (first order) and DARTS_V2
(second order, the paper's 2.76% CIFAR-10 cell); PC-DARTS (Xu et al., ICLR 2020) released its
CIFAR-10 and ImageNet cells.
"""

from __future__ import annotations

from nas.genotype import FORMAT, VERSION, Genotype

_CELLS: dict[str, dict[str, list[list[tuple[str, int]]]]] = {
    "DARTS_V1": {
        "normal": [
            [("sep_conv_3x3", 1), ("sep_conv_3x3", 0)],
            [("skip_connect", 0), ("sep_conv_3x3", 1)],
            [("skip_connect", 0), ("sep_conv_3x3", 1)],
            [("sep_conv_3x3", 0), ("skip_connect", 2)],
        ],
        "reduce": [
            [("max_pool_3x3", 0), ("max_pool_3x3", 1)],
            [("skip_connect", 2), ("max_pool_3x3", 0)],
            [("max_pool_3x3", 0), ("skip_connect", 2)],
            [("skip_connect", 2), ("avg_pool_3x3", 0)],
        ],
    },
    "DARTS_V2": {
        "normal": [
            [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)],
            [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)],
            [("sep_conv_3x3", 1), ("skip_connect", 0)],
            [("skip_connect", 0), ("dil_conv_3x3", 2)],
        ],
        "reduce": [
            [("max_pool_3x3", 0), ("max_pool_3x3", 1)],
            [("skip_connect", 2), ("max_pool_3x3", 1)],
            [("max_pool_3x3", 0), ("skip_connect", 2)],
            [("skip_connect", 2), ("max_pool_3x3", 1)],
        ],
    },
    "PC_DARTS_cifar": {
        "normal": [
            [("sep_conv_3x3", 1), ("skip_connect", 0)],
            [("sep_conv_3x3", 0), ("dil_conv_3x3", 1)],
            [("sep_conv_5x5", 0), ("sep_conv_3x3", 1)],
            [("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
        ],
        "reduce": [
            [("sep_conv_5x5", 1), ("max_pool_3x3", 0)],
            [("sep_conv_5x5", 1), ("sep_conv_5x5", 2)],
            [("sep_conv_3x3", 0), ("sep_conv_3x3", 3)],
            [("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
        ],
    },
    "PC_DARTS_image": {
        "normal": [
            [("skip_connect", 1), ("sep_conv_3x3", 0)],
            [("sep_conv_3x3", 0), ("skip_connect", 1)],
            [("sep_conv_3x3", 1), ("sep_conv_3x3", 3)],
            [("sep_conv_3x3", 1), ("dil_conv_5x5", 4)],
        ],
        "reduce": [
            [("sep_conv_3x3", 0), ("skip_connect", 1)],
            [("dil_conv_5x5", 2), ("max_pool_3x3", 1)],
            [("sep_conv_3x3", 2), ("sep_conv_3x3", 1)],
            [("sep_conv_5x5", 0), ("sep_conv_3x3", 3)],
        ],
    },
}


def _genotype(name: str) -> Genotype:
    cells = {
        kind: {
            "nodes": [[{"op": op, "input": index} for op, index in node] for node in nodes],
            "concat": [2, 3, 4, 5],
        }
        for kind, nodes in _CELLS[name].items()
    }
    data = {"format": FORMAT, "version": VERSION, "space": "darts", **cells}
    return Genotype.from_dict(data, where=name)


PUBLISHED_GENOTYPES: dict[str, Genotype] = {name: _genotype(name) for name in _CELLS}
