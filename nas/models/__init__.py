"""Discrete networks built from a genotype, by name (`cifar`, `imagenet`)."""

from nas.models.networks import CifarNetwork, GenotypeNetwork, ImageNetNetwork
from nas.models.summary import count_mult_adds, count_parameters

# `model.network` name -> builder; paper sizes are in nas.config.NETWORK_DEFAULTS.
NETWORKS = {"cifar": CifarNetwork, "imagenet": ImageNetNetwork}

__all__ = [
    "NETWORKS",
    "CifarNetwork",
    "GenotypeNetwork",
    "ImageNetNetwork",
    "count_mult_adds",
    "count_parameters",
]
