"""`nas show`: describe a genotype and draw its cells."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from nas.runs import note_unfinished


def add_parser(commands: Any) -> None:
    """`nas show` and its options."""
    parser = commands.add_parser(
        "show",
        help="describe a genotype and draw its cells",
        description="Print a genotype's cells and network sizes; with --out, draw the normal and "
        "the reduction cell as a PNG (needs matplotlib: pip install 'nasforge[plot]').",
    )
    parser.add_argument("genotype", metavar="NAME_OR_FILE", help="published name, file or run dir")
    parser.add_argument("--out", metavar="FILE.png", help="write the drawing here")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the genotype's description; draw it into --out."""
    from nas.drawing import describe_genotype
    from nas.genotype import load_genotype

    genotype = load_genotype(args.genotype)
    note_unfinished(genotype)
    print(describe_genotype(genotype))
    if args.out:
        from nas.drawing import save_genotype_png

        save_genotype_png(genotype, Path(args.out))
        print(f"written: {args.out}")
    return 0
