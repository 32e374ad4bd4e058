"""`nas sample`: random genotypes of a search space, the baseline a search should beat."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from nas.errors import NasError

COMMAND = "sample"


def add_parser(commands: Any) -> None:
    """`nas sample` and its options."""
    parser = commands.add_parser(
        COMMAND,
        help="write random genotypes of a search space (a baseline for a search)",
        description="Write COUNT random genotypes of a search space as genotype JSON files "
        "numbered from 0 (genotype_0.json, ...) into a new or empty folder. Each node of each cell "
        "keeps distinct inputs chosen uniformly among the states before it and a uniformly "
        "chosen op other than none on each, as a search derives. The same seed gives the same "
        "genotypes. Train one with nas train --genotype FILE.",
    )
    space = parser.add_argument(
        "--space", default="darts", help="search space: {names} (default: darts)"
    )
    space.names_from = "nas.spaces:SPACES"  # read by the help formatter
    parser.add_argument("--count", type=int, default=8, help="genotypes to write (default: 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--out", metavar="DIR", help="output folder (default: runs/sample-SPACE-seedS-TIME)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Sample, write the files and say how to train one."""
    from nas.ownership import check_new_run_dir, check_out_path, write_marker
    from nas.rundir import run_stamp
    from nas.sampling import sample_genotypes

    genotypes = sample_genotypes(args.space, args.count, args.seed)
    out = args.out
    if out is None:
        out = f"runs/sample-{args.space}-seed{args.seed}-{run_stamp()}"
    check_out_path(out)
    folder = Path(out)
    check_new_run_dir(folder, COMMAND)
    if folder.is_dir() and any(folder.glob("genotype_*.json")):
        raise NasError(
            f"{shlex.quote(out)} already holds sampled genotypes, which are not replaced; "
            "choose another --out"
        )
    write_marker(folder, COMMAND)
    width = len(str(len(genotypes) - 1))
    for index, genotype in enumerate(genotypes):
        path = folder / f"genotype_{index:0{width}d}.json"
        genotype.save(path)
        print(f"written: {path}")
    first = shlex.quote(str(folder / f"genotype_{0:0{width}d}.json"))
    print(
        f"{len(genotypes)} random genotypes of space {args.space} (seed {args.seed}); "
        f"train one with: nas train --genotype {first} --dataset DATASET"
    )
    return 0
