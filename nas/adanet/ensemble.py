"""The AdaNet ensemble f = sum_j w_j h_j, its complexity-regularised objective and ensemble.json.

Cortes et al., "AdaNet: Adaptive Structural Learning of Artificial Neural Networks", ICML 2017:
the objective (with the cross-entropy as the surrogate loss) is

    F(w) = mean cross-entropy(f(x), y) + sum_j (lambda * r(h_j) + beta) * |w_j|_1

where r(h_j) is the complexity of subnetwork h_j (sqrt(depth), see generators.py). A mixture
weight w_j is a scalar, or a vector with one weight per class ("vector" mixture).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.adanet.generators import GENERATORS, DataShape, Subnetwork, SubnetworkGenerator
from nas.errors import NasError, shorten
from nas.io import read_json

FORMAT = "nasforge.ensemble"
VERSION = 1


def mix(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_j w_j * logits_j. `logits` is (members, N, classes); `weights` (members,) or
    (members, classes).
    """
    if weights.dim() == 1:
        weights = weights[:, None]
    return torch.einsum("mnk,mk->nk", logits, weights.expand(-1, logits.shape[-1]))


def penalty(weights: torch.Tensor, gammas: torch.Tensor) -> torch.Tensor:
    """sum_j gamma_j * |w_j|_1 with gamma_j = lambda * r(h_j) + beta."""
    return (gammas * weights.abs().reshape(len(gammas), -1).sum(dim=1)).sum()


def objective(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, gammas: torch.Tensor
) -> torch.Tensor:
    """F(w) on one batch: mean cross-entropy of the mixture plus the complexity penalty."""
    return F.cross_entropy(mix(logits, weights), labels) + penalty(weights, gammas)


class Ensemble(nn.Module):
    """Frozen members and their mixture weights. Members stay in eval mode and hold no gradients:
    only a candidate and the mixture weights of a candidate ensemble ever train.
    """

    def __init__(self, num_classes: int, vector: bool) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.vector = vector
        self.members = nn.ModuleList()
        self.register_buffer("mixture", torch.zeros((0, num_classes) if vector else (0,)))
        self.register_buffer("gammas", torch.zeros(0))
        self.architectures: list[dict] = []
        self.iterations: list[int] = []
        self.complexities: list[float] = []

    def add(
        self,
        member: Subnetwork,
        architecture: dict,
        iteration: int,
        complexity: float,
        gamma: float,
        mixture: torch.Tensor,
    ) -> None:
        """Freeze `member` and append it; `mixture` holds the weights of all members."""
        member.eval().requires_grad_(False)
        self.members.append(member)
        self.architectures.append(architecture)
        self.iterations.append(iteration)
        self.complexities.append(complexity)
        self.gammas = torch.cat([self.gammas, self.gammas.new_tensor([gamma])])
        self.mixture = mixture.detach().clone().to(self.mixture)

    def train(self, mode: bool = True) -> Ensemble:
        super().train(mode)
        self.members.eval()  # frozen: BatchNorm and dropout stay in inference mode
        return self

    @torch.no_grad()
    def outputs(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every member's (logits, hidden layer) on `x`, oldest first."""
        logits, hidden = [], []
        for member, architecture in zip(self.members, self.architectures):
            out, features = member(x, [hidden[i] for i in architecture["reads"]])
            logits.append(out)
            hidden.append(features)
        return logits, hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, _ = self.outputs(x)
        if not logits:  # the empty ensemble predicts uniformly
            return x.new_zeros(x.shape[0], self.num_classes)
        return mix(torch.stack(logits), self.mixture)

    def to_dict(self, generator: str, data: dict[str, Any], objective_info: dict) -> dict:
        """The ensemble.json form (architectures, not weights)."""
        members = [
            {
                "iteration": iteration,
                "architecture": architecture,
                "mixture_weight": weights.tolist(),
                "complexity": complexity,
            }
            for iteration, architecture, weights, complexity in zip(
                self.iterations, self.architectures, self.mixture, self.complexities
            )
        ]
        return {
            "format": FORMAT,
            "version": VERSION,
            "generator": generator,
            "mixture": "vector" if self.vector else "scalar",
            "data": data,
            "objective": objective_info,
            "members": members,
        }


DATA_FIELDS = {
    "dataset": str,
    "in_channels": int,
    "image_size": int,
    "num_classes": int,
    "mean": list,
    "std": list,
}
OBJECTIVE_FIELDS = {
    "loss": str,
    "complexity": str,
    "complexity_weight": float,
    "complexity_bias": float,
    "value": float,
}


def validate_ensemble(data: Any, where: str = "ensemble") -> dict:
    """Check an ensemble.json object; returns it. Raises NasError naming the offending field."""
    from nas.adanet.config import AdaNetConfig

    if not isinstance(data, dict):
        raise NasError(f"{where}: expected a JSON object, got {type(data).__name__}")
    allowed = {"format", "version", "generator", "mixture", "data", "objective", "members"}
    if set(data) != allowed:
        raise NasError(
            f"{where}: expected the fields {sorted(allowed)}, got {shorten(sorted(data), 200)}"
        )
    if data["format"] != FORMAT:
        raise NasError(f"{where}.format: expected {FORMAT!r}, got {shorten(data['format'])}")
    if type(data["version"]) is not int or data["version"] != VERSION:
        raise NasError(
            f"{where}.version: unknown version {shorten(data['version'])}; this nasforge reads "
            "version "
            f"{VERSION} (a newer file needs a newer nasforge)"
        )
    if data["mixture"] not in ("scalar", "vector"):
        raise NasError(
            f"{where}.mixture: expected 'scalar' or 'vector', got {shorten(data['mixture'])}"
        )
    for section, fields in (("data", DATA_FIELDS), ("objective", OBJECTIVE_FIELDS)):
        _check_section(data[section], fields, f"{where}.{section}")
    shape = data["data"]
    for name, minimum in (("in_channels", 1), ("image_size", 1), ("num_classes", 2)):
        if shape[name] < minimum:
            raise NasError(f"{where}.data.{name}: expected at least {minimum}, got {shape[name]}")
    if type(data["generator"]) is not str:
        raise NasError(f"{where}.generator: expected a name, got {shorten(data['generator'])}")
    try:
        generator_class = GENERATORS.get(data["generator"])
    except NasError as err:
        raise NasError(f"{where}.generator: {err}") from None
    shape = data_shape(data)
    generator = generator_class(AdaNetConfig(generator=data["generator"]), shape)
    members = data["members"]
    if not isinstance(members, list):
        raise NasError(f"{where}.members: expected a list")
    previous = -1
    for index, member in enumerate(members):
        at = f"{where}.members[{index}]"
        fields = {"iteration", "architecture", "mixture_weight", "complexity"}
        if not isinstance(member, dict) or set(member) != fields:
            raise NasError(f"{at}: expected an object with the fields {sorted(fields)}")
        if type(member["iteration"]) is not int or member["iteration"] <= previous:
            raise NasError(f"{at}.iteration: expected an integer above {previous}")
        previous = member["iteration"]
        generator.validate(member["architecture"], f"{at}.architecture", index)
        weight = member["mixture_weight"]
        size = shape.num_classes if data["mixture"] == "vector" else None
        ok = (
            _is_number(weight)
            if size is None
            else (isinstance(weight, list) and len(weight) == size and all(map(_is_number, weight)))
        )
        if not ok:
            what = "a number" if size is None else f"a list of {size} numbers (one per class)"
            raise NasError(f"{at}.mixture_weight: expected {what}, got {shorten(weight)}")
        if not _is_number(member["complexity"]) or member["complexity"] < 0:
            raise NasError(f"{at}.complexity: expected a number >= 0")
    return data


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _check_section(section: Any, fields: dict[str, type], where: str) -> None:
    if not isinstance(section, dict) or set(section) != set(fields):
        raise NasError(f"{where}: expected an object with the fields {sorted(fields)}")
    for name, kind in fields.items():
        value = section[name]
        ok = _is_number(value) if kind is float else type(value) is kind
        if not ok:
            raise NasError(f"{where}.{name}: expected {kind.__name__}, got {shorten(value)}")


def data_shape(data: dict) -> DataShape:
    """The input and output shape an ensemble.json records."""
    section = data["data"]
    return DataShape(section["in_channels"], section["image_size"], section["num_classes"])


def build_ensemble(data: dict, generator: SubnetworkGenerator) -> Ensemble:
    """The Ensemble an ensemble.json object describes, with its mixture weights and untrained
    members (load their weights next). The run's RNG is left untouched.
    """
    ensemble = Ensemble(data["data"]["num_classes"], data["mixture"] == "vector")
    objective_info = data["objective"]
    for member in data["members"]:
        architecture = member["architecture"]
        reads = [ensemble.members[i].hidden_size for i in architecture["reads"]]
        gamma = objective_info["complexity_weight"] * member["complexity"]
        weights = [m["mixture_weight"] for m in data["members"][: len(ensemble.members) + 1]]
        with torch.random.fork_rng(devices=[]):
            module = generator.build(architecture, reads)
        ensemble.add(
            module,
            architecture,
            member["iteration"],
            member["complexity"],
            gamma + objective_info["complexity_bias"],
            torch.tensor(weights, dtype=torch.float32),
        )
    return ensemble


def load_ensemble(run_dir: str | Path) -> tuple[Ensemble, dict]:
    """The trained ensemble of a `nas grow` run: ensemble.json plus checkpoints/ensemble.pt.

    Returns (ensemble in eval mode, the ensemble.json object). Raises NasError if the files are
    missing, invalid or do not belong together.
    """
    from nas.adanet.config import AdaNetConfig
    from nas.runtime.checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    path = run_dir / "ensemble.json"
    if not path.is_file():
        raise NasError(f"{path} does not exist; is {run_dir} a nas grow run directory?")
    data = validate_ensemble(read_json(path, str(path)), str(path))
    weights = run_dir / "checkpoints" / "ensemble.pt"
    try:
        payload = load_checkpoint(weights, restore_rng=False)
    except NasError as err:  # torch's reasons run over several lines: the first says enough
        raise NasError(str(err).splitlines()[0][:400]) from None
    if not isinstance(payload.get("ensemble"), dict) or not isinstance(payload.get("state"), dict):
        raise NasError(f"{weights} is not the weights file of a nas grow ensemble")
    if payload["ensemble"] != data:
        raise NasError(f"{path} and {weights} are from different iterations")
    generator = GENERATORS.get(data["generator"])(
        AdaNetConfig(generator=data["generator"]), data_shape(data)
    )
    ensemble = build_ensemble(data, generator)
    try:
        ensemble.load_state_dict(payload["state"])
    except (RuntimeError, TypeError, AttributeError) as err:
        message = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise NasError(f"{weights}: weights do not fit {path} ({message})") from None
    return ensemble.eval(), data
