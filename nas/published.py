"""Published genotypes of the DARTS space, written as data, and `load_genotype` by name or file.

Each cell lists its four intermediate nodes as pairs of (op, input state); every cell concatenates
states 2..5. Sources: DARTS (Liu et al., ICLR 2019) released DARTS_V1 (first order) and DARTS_V2
(second order, the paper's 2.76% CIFAR-10 cell); PC-DARTS (Xu et al., ICLR 2020) released its
CIFAR-10 and ImageNet cells.
"""

from __future__ import annotations

from pathlib import Path

from nas.errors import NasError, shorten
from nas.genotype import FORMAT, VERSION, Genotype, parse_notation

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


def load_genotype(name_or_path: str) -> Genotype:
    """A published genotype by name, the DARTS notation `Genotype(normal=[...], ...)`, a genotype
    JSON file, or a run directory's genotype.json.

    Raises NasError when it is none of these or the file is invalid.
    """
    if name_or_path in PUBLISHED_GENOTYPES:
        return PUBLISHED_GENOTYPES[name_or_path]
    if name_or_path.lstrip().startswith("Genotype("):
        return parse_notation(name_or_path)
    path = Path(name_or_path)
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except OSError as err:  # a name too long for the file system
        raise NasError(
            f"genotype {shorten(name_or_path)} cannot be a file ({err.strerror}); give a "
            f"published name ({', '.join(PUBLISHED_GENOTYPES)}), a genotype.json or the "
            "notation Genotype(normal=[...], ...)"
        ) from None
    if is_dir:
        path = path / "genotype.json"
        if not path.exists():
            raise NasError(f"{shorten(name_or_path)} is a directory without a genotype.json")
    elif not is_file:
        names = ", ".join(PUBLISHED_GENOTYPES)
        raise NasError(
            f"genotype {shorten(name_or_path)} is neither a published name ({names}) nor an "
            "existing file; pass a genotype.json written by nas search, or its run directory"
        )
    return Genotype.load(path)


def unfinished_note(genotype: Genotype) -> str | None:
    """A one-line note when `genotype` comes from a search that had not finished; else None."""
    progress = genotype.search
    if progress is None or progress.complete:
        return None
    return (
        f"note: this genotype comes from an unfinished search, epoch {progress.epoch} of "
        f"{progress.epochs}; its architecture may still have changed"
    )
