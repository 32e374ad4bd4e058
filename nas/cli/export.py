"""`nas export`: a trained model as TorchScript, ONNX or torch.export, checked against it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(commands: Any) -> None:
    """`nas export` and its options."""
    parser = commands.add_parser(
        "export",
        help="export a trained model (TorchScript, ONNX or torch.export)",
        description="Export the network trained in RUN_DIR, with its genotype and a model card "
        "(model_card.json), into RUN_DIR/export/ or --out DIR. The exported model is run once "
        "and checked against the trained network.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a nas train run directory")
    parser.add_argument(
        "--format", required=True, choices=["torchscript", "onnx", "exported"], dest="format"
    )
    parser.add_argument(
        "--checkpoint", choices=["best", "last"], default="best", help="which weights (best)"
    )
    parser.add_argument("--out", metavar="DIR", help="output folder (default: RUN_DIR/export)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Export and say where."""
    from nas.export import export_run

    result = export_run(Path(args.run_dir), args.format, args.checkpoint, args.out)
    print(
        f"exported {result['model_file']} ({args.format}); outputs match the trained network "
        f"(max abs difference {result['max_abs_diff']:.2e})"
    )
    print(f"written: {result['folder']}/ (model, genotype.json, model_card.json)")
    return 0
