"""Export a trained network (TorchScript, ONNX, torch.export) with its genotype and a model card.

Every export is loaded back and run on a check batch; the result must match the trained network.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from nas.errors import NasError
from nas.export_folder import (
    CARD_FILE,
    CARD_FORMAT,
    GENOTYPE_FILE,
    keep_file,
    previous_card,
    staged,
)
from nas.genotype import Genotype
from nas.io import atomic_write_text
from nas.runtime.checkpoint import load_checkpoint

FILE_NAMES = {"torchscript": "model.pt", "onnx": "model.onnx", "exported": "model.pt2"}
CARD_VERSION = 1
# Card fields that identify the weights: formats exported from the same ones stay side by side.
SAME_WEIGHTS = ("checkpoint", "epoch", "test_accuracy", "params", "weights_sha256")
# Outputs of the export and the trained network may differ by float reassociation only.
TOLERANCE = 1e-4


def load_trained(run_dir: Path, which: str = "best") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The network of a `nas train` run (eval mode, CPU) and its checkpoint's facts.

    Raises NasError when the run directory holds no such checkpoint.
    """
    from nas.train_task import build_network, saved_spec

    path = run_dir / "checkpoints" / f"{which}.pt"
    if not path.is_file():
        raise NasError(
            f"{path} does not exist: export needs a run directory written by nas train "
            "(with at least one completed epoch)"
        )
    payload = load_checkpoint(path, restore_rng=False)
    state = payload if which == "best" else payload.get("task", {})
    if saved_spec(state) is None or "network" not in state:
        raise NasError(f"{path} is not a nas train checkpoint (a search run cannot be exported)")
    try:
        network = build_network(saved_spec(state))
    except (KeyError, TypeError, ValueError) as err:  # a spec without a field, or a wrong type
        raise NasError(
            f"{path} does not describe a network nasforge can build ({type(err).__name__}: "
            f"{str(err)[:200]}); export a checkpoint written by nas train"
        ) from None
    try:
        network.load_state_dict(state["network"])
    except RuntimeError as err:
        raise NasError(f"{path}: weights do not fit the network it describes ({err})") from None
    facts = {
        "spec": saved_spec(state),
        "epoch": payload["epoch"] if which == "last" else state["epoch"],
        # best.pt: accuracies of its weights (validation chose them); last.pt: the final
        # weights' test accuracy, None until the run has finished
        "val_acc": state.get("val_acc") if which == "best" else None,
        "test_acc": state.get("test_acc") if which == "best" else state.get("last_test_acc"),
    }
    return network.eval(), facts


def export_run(
    run_dir: Path, fmt: str, which: str = "best", out: str | None = None
) -> dict[str, Any]:
    """Export a run's network as `fmt`; return the output folder, file and the check's max error.

    The export is built in a staging folder beside the output folder and moved into place whole
    (nas/export_folder.py), so the folder always holds one consistent export. Raises NasError
    for a bad run directory or output folder, a missing optional package or a failed check.
    """
    if fmt not in FILE_NAMES:
        raise NasError(f"unknown export format {fmt!r}; choose one of {', '.join(FILE_NAMES)}")
    network, facts = load_trained(run_dir, which)
    spec = facts["spec"]
    folder = Path(out) if out else run_dir / "export"
    if folder.resolve() in (Path.cwd(), *Path.cwd().parents):
        # The export is swapped in by renaming its folder; the folder a shell stands in is not
        # one to swap out from under it.
        raise NasError(f"--out {folder} is the current folder or holds it; give a sub-folder")
    previous = previous_card(folder, set(FILE_NAMES.values()) | {GENOTYPE_FILE, CARD_FILE})
    shape = _input_shape(spec)
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2, *shape, generator=generator)
    check = torch.randn(3, *shape, generator=generator)  # another batch size: batch is dynamic
    with torch.no_grad():
        expected = network(check)
    card = _model_card(spec, facts, network, which)
    with staged(folder) as staging:
        with _quiet_exporters():
            actual = _EXPORTERS[fmt](network, example, check, staging / FILE_NAMES[fmt])
        max_abs_diff = float((actual - expected).abs().max())
        if not max_abs_diff <= TOLERANCE:
            raise NasError(
                f"the {fmt} export differs from the trained network by {max_abs_diff:.2e} (more "
                f"than {TOLERANCE}); nothing was written to {folder}"
            )
        if spec.get("genotype") is not None:  # a baseline has none
            Genotype.from_dict(spec["genotype"]).save(staging / GENOTYPE_FILE)
        earlier = _earlier_exports(previous, card, exclude=fmt)
        for name in earlier.values():
            keep_file(folder / name, staging / name)
        card["exports"] = {**earlier, fmt: FILE_NAMES[fmt]}
        atomic_write_text(staging / CARD_FILE, json.dumps(card, indent=2) + "\n")
    return {"folder": folder, "model_file": folder / FILE_NAMES[fmt], "max_abs_diff": max_abs_diff}


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Silence exporter chatter that is not about this model.

    The tracer warns that FactorizedReduce's odd-size padding branch is fixed at the traced image
    size; exports are for that one size (the model card says which). torch's ONNX exporter logs
    that torchvision's ops are skipped, and a deprecation inside torch.
    """
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        onnx_logger.setLevel(level)


def _earlier_exports(
    previous: dict[str, Any] | None, card: dict[str, Any], exclude: str
) -> dict[str, str]:
    """The other formats already exported from the same weights (one card lists every format)."""
    if not previous or any(previous.get(k) != card[k] for k in SAME_WEIGHTS):
        return {}
    exports = previous.get("exports")
    if not isinstance(exports, dict):
        return {}
    return {f: n for f, n in exports.items() if f != exclude and FILE_NAMES.get(f) == n}


def _model_card(
    spec: dict[str, Any], facts: dict[str, Any], model: torch.nn.Module, which: str
) -> dict[str, Any]:
    from nas import __version__
    from nas.models import count_parameters

    if spec.get("baseline") is not None:
        network = {"network": spec["baseline"]}
    else:
        network = {
            "network": spec["network"],
            "layers": spec["layers"],
            "channels": spec["channels"],
            "genotype_file": GENOTYPE_FILE,
        }

    # Checkpoints that do not record them: classes named by their label index, and inputs
    # already scaled as the mean and std expect (input_scale 1).
    scale = spec.get("input_scale") or 1.0
    class_names = spec.get("class_names") or [str(i) for i in range(spec["num_classes"])]
    return {
        "format": CARD_FORMAT,
        "version": CARD_VERSION,
        "input_shape": ["batch", *_input_shape(spec)],
        "input_normalisation": {
            "input_scale": scale,
            "mean": spec["mean"],
            "std": spec["std"],
            "how": "divide the raw input by input_scale, then per channel subtract mean and "
            "divide by std",
        },
        "output": f"logits over {spec['num_classes']} classes, in the order of class_names",
        "num_classes": spec["num_classes"],
        "class_names": class_names,
        "dataset": spec["dataset"],
        "params": count_parameters(model),
        "validation_accuracy": facts["val_acc"],
        "test_accuracy": facts["test_acc"],
        "checkpoint": which,
        "epoch": facts["epoch"],
        **network,
        "weights_sha256": _weights_digest(model),
        "nasforge_version": __version__,
        "torch_version": torch.__version__,
    }


def _input_shape(spec: dict[str, Any]) -> tuple[int, ...]:
    """One input's shape: (C, H, W) for an image network, (C, L) for a signal network."""
    side = spec["image_size"]
    return (
        (spec["in_channels"], side)
        if spec.get("dims", 2) == 1
        else (spec["in_channels"], side, side)
    )


def _weights_digest(network: torch.nn.Module) -> str:
    """A digest of the network's weights: tells whether an earlier export came from them."""
    digest = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        digest.update(name.encode())
        digest.update(
            tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()


def _torchscript(
    network: torch.nn.Module, example: torch.Tensor, check: torch.Tensor, path: Path
) -> torch.Tensor:
    with torch.no_grad():
        traced = torch.jit.trace(network, example)
    from nas.io import atomic_write

    atomic_write(path, lambda f: torch.jit.save(traced, f))
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        return loaded(check)


def _exported(
    network: torch.nn.Module, example: torch.Tensor, check: torch.Tensor, path: Path
) -> torch.Tensor:
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.export.export(network, (example,), dynamic_shapes=({0: batch},))
    from nas.io import atomic_write

    atomic_write(path, lambda f: torch.export.save(program, f))
    loaded = torch.export.load(str(path)).module()
    with torch.no_grad():
        return loaded(check)


def _onnx(
    network: torch.nn.Module, example: torch.Tensor, check: torch.Tensor, path: Path
) -> torch.Tensor:
    from nas.optional import optional_import

    optional_import("onnxscript", "ONNX export")  # torch's ONNX exporter imports it
    onnxruntime = optional_import("onnxruntime", "ONNX export")
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.onnx.export(
        network,
        (example,),
        dynamo=True,
        dynamic_shapes=({0: batch},),
        input_names=["images"],
        output_names=["logits"],
        verbose=False,
    )
    from nas.io import atomic_write

    atomic_write(path, lambda f: f.write(program.model_proto.SerializeToString()))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": check.numpy()})
    return torch.from_numpy(logits)


_EXPORTERS = {"torchscript": _torchscript, "onnx": _onnx, "exported": _exported}
