"""A user's CSV table read as numeric features and class labels, checked row by row.

Every problem is a NasError naming the file, and the row and column where it helps.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import torch

from nas.errors import NasError, shorten

# A class needs rows to learn from: more distinct labels than half the rows is an ID or a
# measurement column, not a class label.
_ROWS_PER_CLASS = 2


def read_table(path: Path, target: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(features (N, F) float32, labels (N,) long, class names) of the CSV file at `path`.

    The first row names the columns; `target` holds the labels (any text, sorted numerically
    when numbers), every other column a number. Raises NasError.
    """
    rows = _rows(path)
    header = [name.strip() for name in rows[0]] if rows else []
    if not any(header):
        raise NasError(f"{path}: empty file; expected a header row naming the columns")
    column = _target_column(path, header, target)
    features, names = [], []
    for line, row in rows[1:]:
        features.append(_numbers(path, line, row, header, column))
        names.append(row[column].strip())
    if not names:
        raise NasError(f"{path}: no data rows below the header")
    classes = sorted(set(names), key=_label_order)
    if len(classes) < 2:
        raise NasError(f"{path}: column {target!r} holds {len(classes)} class; need 2 or more")
    if len(classes) * _ROWS_PER_CLASS > len(names):
        raise NasError(
            f"{path}: column {target!r} holds {len(classes)} labels for {len(names)} rows; "
            f"classification needs at least {_ROWS_PER_CLASS} rows per class on average (is it "
            "an ID or a measured value? --target must name a class column)"
        )
    index = {name: i for i, name in enumerate(classes)}
    labels = torch.tensor([index[name] for name in names], dtype=torch.long)
    return torch.tensor(features, dtype=torch.float32), labels, classes


def _rows(path: Path) -> list:
    """The header and (line number, cells) of every non-blank row after it."""
    if path.is_dir():
        raise NasError(f"data file {str(path)!r} is a directory; give the CSV file itself")
    if not path.is_file():
        raise NasError(f"data file {str(path)!r} does not exist")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise NasError(f"data file {str(path)!r} cannot be read ({err.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise NasError(f"{path}, row {line}: not UTF-8 text; save the table as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list = []
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            rows.append(row if not rows else (reader.line_num, row))
    except csv.Error as err:
        raise NasError(f"{path}, row {reader.line_num}: not readable as CSV ({err})") from None
    return rows


def _target_column(path: Path, header: list[str], target: str) -> int:
    count = header.count(target)
    if count == 0:
        shown = header if len(header) <= 12 else [*header[:12], f"... {len(header)} in all"]
        raise NasError(
            f"{path}: no column {target!r} for --target; the columns are {shorten(shown, 300)}"
        )
    if count > 1:
        raise NasError(f"{path}: {count} columns named {target!r}; rename all but the label column")
    if len(header) < 2:
        raise NasError(f"{path}: no feature columns besides {target!r}")
    return header.index(target)


def _numbers(path: Path, line: int, row: list[str], header: list[str], target: int) -> list[float]:
    if len(row) != len(header):
        raise NasError(
            f"{path}, row {line}: {len(row)} values, but the header has {len(header)} columns"
        )
    values = []
    for column, cell in enumerate(row):
        if column == target:
            continue
        try:
            value = float(cell)
        except ValueError:
            raise NasError(
                f"{path}, row {line}, column {shorten(header[column])}: {shorten(cell)} is not a "
                "number (feature columns must be numeric; only the --target column may hold names)"
            ) from None
        if not math.isfinite(value):
            raise NasError(
                f"{path}, row {line}: missing or infinite value ({cell.strip()}) in column "
                f"{shorten(header[column])}; fill or drop the row"
            )
        values.append(value)
    return values


def _label_order(name: str) -> tuple[int, float, str]:
    """Numeric labels in numeric order ("2" before "10"), then names alphabetically."""
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)
