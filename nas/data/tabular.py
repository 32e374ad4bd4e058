"""Tables: scikit-learn's breast cancer data and the user's CSV file.

A table's F features are stored as (F, 1, 1) inputs, each feature a channel, standardised; its
kind is "table" (for ensembles of dense networks, not for cell search over images).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from nas.config import DataConfig
from nas.data import DATASETS, ImageData, from_arrays
from nas.errors import NasError
from nas.options import Options


def from_table(
    features: torch.Tensor, labels: torch.Tensor, class_names: tuple[str, ...]
) -> ImageData:
    """A table with 20% held out for testing."""
    return from_arrays(
        features[:, :, None, None],
        labels,
        0.2,
        len(class_names),
        kind="table",
        class_names=class_names,
        flips=False,
    )


@DATASETS.register("breast_cancer")
def breast_cancer(config: DataConfig) -> ImageData:
    """scikit-learn's breast cancer data: 569 samples, 30 features, binary; 20% held out."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    features = torch.tensor(data.data, dtype=torch.float32)
    labels = torch.tensor(data.target, dtype=torch.long)
    return from_table(features, labels, tuple(str(name) for name in data.target_names))


@dataclass
class CsvOptions(Options):
    """The user's CSV table."""

    # The file (--data-file): a header row, then numeric feature columns and the label column.
    data_file: str | None = None
    # The label column's name (--target).
    target: str | None = None


@DATASETS.register("csv", options=CsvOptions)
def csv(config: DataConfig) -> ImageData:
    """The user's table: a header row, numeric feature columns and a label column (`target`,
    any values, read as class names in sorted order); 20% held out.
    """
    from nas.data.csv_table import read_table

    options = config.options
    if options.data_file is None or options.target is None:
        raise NasError(
            "--dataset csv needs --data-file FILE and --target COLUMN (the label); see docs/data.md"
        )
    path = Path(options.data_file)
    features, labels, classes = read_table(path, options.target)
    try:
        return from_table(features, labels, tuple(classes))
    except NasError as err:
        raise NasError(f"{path}: {err}") from None
