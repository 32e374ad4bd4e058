"""Subnetwork generators: the AdaNet extension point, a small base class and a name registry.

A generator proposes the candidate architectures of each iteration and builds them. An
architecture is a plain JSON-ready dict (stored in ensemble.json), validated by its generator.
To add one, subclass `SubnetworkGenerator` in a module of this package and decorate it with
`@GENERATORS.register("name", options=NameOptions)`, where `NameOptions` is the dataclass of the
settings it reads (nas/options.py; its fields are `adanet.<field>` keys, read as
`self.options`); tests/test_adanet.py runs every registered generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nas.adanet.config import AdaNetConfig
from nas.errors import NasError, shorten
from nas.options import Options
from nas.registry import Registry


@dataclass(frozen=True)
class DataShape:
    """What a subnetwork reads and predicts: samples of `kind` (nas.data.KINDS) ->
    classes. An image is (in_channels, image_size, image_size), a sequence (in_channels,
    image_size), a table (in_channels, 1, 1).
    """

    in_channels: int
    image_size: int
    num_classes: int
    kind: str = "image"

    @property
    def features(self) -> int:
        """Inputs of a flattened sample."""
        if self.kind == "sequence":
            return self.in_channels * self.image_size
        return self.in_channels * self.image_size**2


class Subnetwork(nn.Module):
    """A member h_j: `forward(x, extra)` returns (logits, hidden), where `hidden` (its last
    hidden layer, `hidden_size` wide) may feed later members, and `extra` holds the hidden layers
    of the earlier members it reads (`architecture["reads"]`).
    """

    hidden_size: int

    def forward(
        self, x: torch.Tensor, extra: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class SubnetworkGenerator:
    """Proposes and builds candidate subnetworks.

    The grow task builds one generator per run. At the start of each iteration it calls
    `propose(members, reports)` with the architectures of the current members (oldest first)
    and the reports of the earlier iterations' candidates; each returned architecture is
    `validate`d, built with `build`, and priced with `complexity` (r(h) in the objective) and
    `cost` (multiply-adds of one sample's forward pass, which the async schedule balances).
    """

    def __init__(self, config: AdaNetConfig, shape: DataShape) -> None:
        self.config = config
        self.shape = shape
        options = config.options
        self.options = options if options is not None else GENERATORS.options(config.generator)()

    def propose(self, members: list[dict], reports: list[dict]) -> list[dict]:
        """The candidate architectures of the next iteration (at least one, no repeats)."""
        raise NotImplementedError

    def validate(self, architecture: Any, where: str, members: int) -> dict:
        """`architecture` checked (it may read only the `members` earlier members); raises
        NasError naming the field.
        """
        raise NotImplementedError

    def build(self, architecture: dict, read_sizes: list[int]) -> Subnetwork:
        """The module of `architecture`; `read_sizes` are the hidden sizes of the members it
        reads. Its initial weights come from torch's global generator.
        """
        raise NotImplementedError

    def complexity(self, architecture: dict) -> float:
        """r(h) = sqrt(depth). The paper's r(h) bounds the Rademacher complexity of h's family,
        which grows with depth through a product over the layers (Cortes et al., ICML 2017);
        with the norms left to training, sqrt(depth) is the form the authors' TensorFlow
        examples use. See docs/adanet.md.
        """
        return math.sqrt(architecture["depth"])

    def cost(self, architecture: dict, read_sizes: list[int]) -> float:
        """Multiply-adds of one sample's forward pass."""
        raise NotImplementedError


# The built-ins are defined below, in this module, so the registry needs no loader.
GENERATORS: Registry[type[SubnetworkGenerator]] = Registry("subnetwork generator")


def _positive_int(value: Any, where: str) -> int:
    if type(value) is not int or value < 1:
        raise NasError(f"{where}: expected a positive integer, got {shorten(value)}")
    return value


def _check_fields(architecture: Any, kind: str, fields: set[str], where: str) -> None:
    if not isinstance(architecture, dict):
        raise NasError(f"{where}: expected an object, got {type(architecture).__name__}")
    if architecture.get("kind") != kind:
        raise NasError(f"{where}.kind: expected {kind!r}, got {shorten(architecture.get('kind'))}")
    if set(architecture) != fields:
        raise NasError(
            f"{where}: expected the fields {sorted(fields)}, got {shorten(sorted(architecture))}"
        )


class MLPSubnetwork(Subnetwork):
    """`depth` ReLU layers of `width` units on the flattened input (and the hidden layers it
    reads), then a linear classifier.
    """

    def __init__(self, inputs: int, depth: int, width: int, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for layer in range(depth):
            layers += [nn.Linear(inputs if layer == 0 else width, width), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)
        self.hidden_size = width

    def forward(
        self, x: torch.Tensor, extra: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.body(torch.cat([x.flatten(1), *extra], dim=1))
        return self.head(hidden), hidden


@dataclass
class MLPOptions(Options):
    """The mlp generator's candidates."""

    # Hidden width of the candidates; one (same depth, depth + 1) pair per width.
    widths: list[int] = field(default_factory=lambda: [128])
    # A new subnetwork also reads the last hidden layer of every earlier member.
    reuse_hidden: bool = False

    def checks(self) -> list[tuple[bool, str]]:
        widths = self.widths
        return [(bool(widths) and min(widths) >= 1, "adanet.widths must be positive widths")]


@GENERATORS.register("mlp", options=MLPOptions)
class MLPGenerator(SubnetworkGenerator):
    """For each width: one candidate as deep as the newest member and one a layer deeper
    (`initial_depth` and `initial_depth + 1` in the first iteration).
    """

    def propose(self, members: list[dict], reports: list[dict]) -> list[dict]:
        depth = members[-1]["depth"] if members else self.config.initial_depth or 1
        reads = list(range(len(members))) if self.options.reuse_hidden else []
        return [
            {"kind": "mlp", "depth": d, "width": width, "reads": reads}
            for width in dict.fromkeys(self.options.widths)
            for d in (depth, depth + 1)
        ]

    def validate(self, architecture: Any, where: str, members: int) -> dict:
        _check_fields(architecture, "mlp", {"kind", "depth", "width", "reads"}, where)
        _positive_int(architecture["depth"], f"{where}.depth")
        _positive_int(architecture["width"], f"{where}.width")
        reads = architecture["reads"]
        if not isinstance(reads, list) or any(
            type(i) is not int or not 0 <= i < members for i in reads
        ):
            raise NasError(
                f"{where}.reads: expected indices of earlier members (0..{members - 1}), got "
                f"{shorten(reads)}"
            )
        return architecture

    def build(self, architecture: dict, read_sizes: list[int]) -> Subnetwork:
        inputs = self.shape.features + sum(read_sizes)
        return MLPSubnetwork(
            inputs, architecture["depth"], architecture["width"], self.shape.num_classes
        )

    def cost(self, architecture: dict, read_sizes: list[int]) -> float:
        depth, width = architecture["depth"], architecture["width"]
        inputs = self.shape.features + sum(read_sizes)
        return inputs * width + (depth - 1) * width * width + width * self.shape.num_classes


class CNNSubnetwork(Subnetwork):
    """A DARTS-style cell network (nas/models) of `cells` cells; its pooled features are the
    hidden layer.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.head = network.classifier
        network.classifier = nn.Identity()  # the network now returns the pooled features
        self.network = network
        self.hidden_size = self.head.in_features

    def forward(
        self, x: torch.Tensor, extra: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.network(x)
        return self.head(hidden), hidden


@dataclass
class CNNOptions(Options):
    """The cnn generator's cells."""

    # The cells' genotype: a published name, a genotype.json or a search run directory.
    cnn_genotype: str = "DARTS_V2"
    # Initial channels of the cell networks.
    cnn_channels: int = 8

    def checks(self) -> list[tuple[bool, str]]:
        from nas.genotype import load_genotype

        try:
            load_genotype(self.cnn_genotype)
            readable = (True, "")
        except NasError as err:
            readable = (False, f"adanet.cnn_genotype: {err}")
        return [(self.cnn_channels >= 1, "adanet.cnn_channels must be at least 1"), readable]


@GENERATORS.register("cnn", options=CNNOptions)
class CNNGenerator(SubnetworkGenerator):
    """Cell networks of one genotype (`adanet.cnn_genotype`, e.g. a searched one): one candidate
    with as many cells as the newest member and one with a cell more (`initial_depth`, by
    default the fewest cells the genotype's space allows, and one more in the first iteration).
    Members read no hidden layers.
    """

    def __init__(self, config: AdaNetConfig, shape: DataShape) -> None:
        super().__init__(config, shape)
        from nas.genotype import load_genotype

        if shape.kind != "image":
            raise NasError(
                f"the cnn generator builds cell networks over images, and this dataset holds "
                f"{shape.kind}s; use --generator mlp (it reads any sample flattened)"
            )
        if shape.image_size < 4:
            raise NasError(
                f"the cnn generator needs images of at least 4x4 pixels, and this dataset's are "
                f"{shape.image_size}x{shape.image_size}; use --generator mlp"
            )
        from nas.spaces import get_space

        genotype = load_genotype(self.options.cnn_genotype)
        self.genotype = genotype.to_dict()
        space = get_space(genotype.space)
        self.first_depth = config.initial_depth
        if self.first_depth is None:  # the fewest cells that give each reduction its own cell
            self.first_depth = next(cells for cells in range(1, 100) if _fits(space, cells))

    def propose(self, members: list[dict], reports: list[dict]) -> list[dict]:
        cells = members[-1]["depth"] if members else self.first_depth
        return [
            {
                "kind": "cnn",
                "depth": d,
                "channels": self.options.cnn_channels,
                "genotype": self.genotype,
                "reads": [],
            }
            for d in (cells, cells + 1)
        ]

    def validate(self, architecture: Any, where: str, members: int) -> dict:
        from nas.genotype import Genotype
        from nas.spaces import check_layers, get_space

        fields = {"kind", "depth", "channels", "genotype", "reads"}
        _check_fields(architecture, "cnn", fields, where)
        _positive_int(architecture["channels"], f"{where}.channels")
        genotype = Genotype.from_dict(architecture["genotype"], where=f"{where}.genotype")
        try:
            check_layers(get_space(genotype.space), _positive_int(architecture["depth"], where))
        except NasError as err:
            raise NasError(f"{where}.depth (cells; adanet.initial_depth): {err}") from None
        if architecture["reads"] != []:
            raise NasError(f"{where}.reads: cnn members read no hidden layers; expected []")
        return architecture

    def build(self, architecture: dict, read_sizes: list[int]) -> Subnetwork:
        from nas.genotype import Genotype
        from nas.models import CifarNetwork

        network = CifarNetwork(
            Genotype.from_dict(architecture["genotype"]),
            self.shape.in_channels,
            self.shape.num_classes,
            channels=architecture["channels"],
            layers=architecture["depth"],
            auxiliary=False,
        )
        return CNNSubnetwork(network)

    def cost(self, architecture: dict, read_sizes: list[int]) -> float:
        from nas.models import count_mult_adds

        with torch.random.fork_rng(devices=[]):  # pricing must not move the run's RNG
            module = self.build(architecture, read_sizes)
        shape = (self.shape.in_channels, self.shape.image_size, self.shape.image_size)
        return float(count_mult_adds(module.network, shape) + module.head.in_features)


def _fits(space: Any, cells: int) -> bool:
    from nas.spaces import check_layers

    try:
        check_layers(space, cells)
    except NasError:
        return False
    return True
