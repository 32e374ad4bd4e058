"""Run logging: metrics.jsonl, TensorBoard (main process only, imported lazily), progress: a tqdm
bar on a terminal, plain lines in a log file or pipe."""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from nas.errors import NasError
from nas.io import atomic_write_text


class RunLogger:
    """Writes a run's logs. With `enabled=False` (non-main processes) every method is a no-op."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.run_dir = run_dir
        self.enabled = enabled
        self._writers: dict[str, Any] = {}  # one per TensorBoard run ("" = tb/ itself)
        self._purge_step: int | None = None
        self._layout: dict[str, dict[str, list[str]]] | None = None
        # Off a terminal: a progress line after the run's first step, then one a minute.
        self._plain_lines = _Every()

    @property
    def tensorboard_dir(self) -> Path:
        """Where the TensorBoard event files go."""
        return self.run_dir / "tb"

    def _tb(self, series: str = "") -> Any:
        if series not in self._writers:
            from torch.utils.tensorboard import SummaryWriter  # lazy: keeps `import nas` fast

            folder = self.tensorboard_dir / series if series else self.tensorboard_dir
            self._writers[series] = SummaryWriter(str(folder), purge_step=self._purge_step)
        return self._writers[series]

    def rewind(self, epoch: int) -> None:
        """Forget everything logged after `epoch` completed epochs (a resumed run redoes them).

        A torn last line (killed mid-write) is dropped; any other damaged row raises NasError
        naming its file and line, before any file is rewritten.
        """
        if not self.enabled:
            return
        rewritten = {}
        for name in RUN_LOGS:  # only nasforge's own logs, never other files in the folder
            path = self.run_dir / name
            if not path.is_file():
                continue
            rows = [line for line in path.read_bytes().splitlines() if line.strip()]
            epochs = [_row_epoch(line) for line in rows]
            if None in epochs[:-1]:
                raise NasError(
                    f"{path} line {epochs.index(None) + 1} is not a JSON row with an epoch "
                    "number; fix or delete that line, then resume again"
                )
            kept = [row.decode() for row, at in zip(rows, epochs) if at is not None and at <= epoch]
            if len(kept) != len(rows):
                rewritten[path] = kept
        for path, kept in rewritten.items():
            atomic_write_text(path, "".join(line + "\n" for line in kept))
        # TensorBoard drops older events at or after this step (all of them on a fresh start).
        self._purge_step = epoch + 1

    def append_jsonl(self, name: str, row: dict[str, Any]) -> None:
        """Append one JSON row to run_dir/name."""
        if not self.enabled:
            return
        with (self.run_dir / name).open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()

    def read_jsonl(self, name: str) -> list[dict[str, Any]]:
        """The rows of run_dir/name ([] when it is missing, or on a non-main process)."""
        path = self.run_dir / name
        if not self.enabled or not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def log_metrics(self, record: dict[str, Any]) -> None:
        """One epoch's metrics: a metrics.jsonl row and a TensorBoard scalar each."""
        if not self.enabled:
            return
        self.append_jsonl("metrics.jsonl", record)
        step = record["epoch"]
        for key, value in record.items():
            if key != "epoch" and isinstance(value, int | float):
                tag, series = metric_tag(key)
                self.scalar(tag, value, step, series)

    def summary(self, record: dict[str, Any], epochs: int, extras: Iterable[str] = ()) -> None:
        """One line per epoch on stderr: losses, accuracies, the `extras` keys, seconds."""
        if not self.enabled:
            return
        fields = [
            f"{key} {value:.4f}"
            for key, value in record.items()
            if key.endswith(("_loss", "_acc")) and isinstance(value, float)
        ]
        fields += [f"{key} {record[key]:.4g}" for key in extras if key in record]
        seconds = record.get("epoch_seconds", 0.0)
        tqdm.write(
            f"epoch {record['epoch']}/{epochs}: {', '.join(fields)}, {seconds:.1f} s", sys.stderr
        )

    def note(self, message: str) -> None:
        """One line on stderr, between progress bars."""
        if self.enabled:
            tqdm.write(message, sys.stderr)

    def scalar(self, tag: str, value: float, step: int, series: str = "") -> None:
        """One TensorBoard scalar. `series` names the TensorBoard run (a subfolder of tb/) it goes
        to, "" for tb/ itself: TensorBoard draws a tag's curves from several runs on one chart, in
        one colour per run and with the run's name, so the curves to compare share a tag and each
        gets its own series (train and val, normal and reduce, one op against another)."""
        if self.enabled:
            self._tb(series).add_scalar(tag, value, step)

    def layout(self, layout: dict[str, dict[str, list[str]]]) -> None:
        """TensorBoard's custom-scalars view: `{category: {chart title: [scalar tags]}}`, each chart
        the curves of its tags on one axis. TensorBoard shows a run's last layout, so it is written
        again only when it changes (and once by each process: a resumed run writes it afresh).
        """
        if not self.enabled or layout == self._layout:
            return
        self._tb().add_custom_scalars(
            {
                category: {title: ["Multiline", [_exactly(tags)]] for title, tags in charts.items()}
                for category, charts in layout.items()
            }
        )
        self._layout = layout

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """One TensorBoard image, HWC uint8."""
        if self.enabled:
            self._tb().add_image(tag, image, step, dataformats="HWC")

    def text(self, tag: str, text: str, step: int) -> None:
        """One TensorBoard text entry (markdown)."""
        if self.enabled:
            self._tb().add_text(tag, text, step)

    def progress(self, iterable: Iterable[Any], total: int, desc: str) -> tqdm | PlainProgress:
        """Progress over `iterable` (silent on non-main processes): a bar on a terminal, else
        plain lines (a bar's redraws would fill a log file with carriage returns)."""
        if self.enabled and not is_terminal(sys.stderr):
            return PlainProgress(iterable, total, desc, self._plain_lines)
        return tqdm(
            iterable,
            total=total,
            desc=desc,
            disable=not self.enabled,
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
        )

    def close(self) -> None:
        """Flush and close the TensorBoard writers."""
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def is_terminal(stream: Any) -> bool:
    """True when `stream` is a terminal, where a progress bar may redraw itself."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


# Seconds between two lines of PlainProgress.
PLAIN_INTERVAL_S = 60.0


class _Every:
    """Says when a line is due: at the first ask, then once `PLAIN_INTERVAL_S` have passed."""

    def __init__(self) -> None:
        self._last: float | None = None

    def due(self) -> bool:
        now = time.monotonic()
        if self._last is not None and now - self._last < PLAIN_INTERVAL_S:
            return False
        self._last = now
        return True


class PlainProgress:
    """Progress off a terminal: a plain stderr line (steps done, the postfix fields) when `every`
    says one is due, and nothing else; each epoch's summary line follows."""

    def __init__(self, iterable: Iterable[Any], total: int, desc: str, every: _Every) -> None:
        self.iterable, self.total, self.desc, self.every = iterable, total, desc, every
        self.n = 0
        self._fields: dict[str, Any] = {}

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable:
            yield item
            self.n += 1
            if self.every.due():
                fields = "".join(f", {key}={value}" for key, value in self._fields.items())
                print(f"{self.desc}: step {self.n}/{self.total}{fields}", file=sys.stderr)

    def set_postfix(self, **fields: Any) -> None:
        """The fields of the next line."""
        self._fields = fields

    def close(self) -> None:
        """Nothing to clear: no line is ever redrawn."""


def announce(message: str) -> None:
    """One `nas: MESSAGE ...` line on stderr before a slow step, from the first process only and
    only on a terminal: in a log or a pipe, a refused command's stderr stays its one error line."""
    if os.environ.get("RANK", "0") == "0" and is_terminal(sys.stderr):
        tqdm.write(f"nas: {message} ...", sys.stderr)  # between the lines of a tune's bar


# The jsonl logs commands append to, one row per epoch (or candidate), rewound on resume.
RUN_LOGS = ("metrics.jsonl", "genotypes.jsonl", "op_weights.jsonl", "candidates.jsonl")


def _row_epoch(line: bytes) -> float | None:
    """The epoch of a jsonl row (0 if it has none); None for a row that is no JSON object with a
    finite epoch number."""
    try:
        row = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deeply
        return None
    at = row.get("epoch", 0) if isinstance(row, dict) else None
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        return None
    return at


def metric_tag(key: str) -> tuple[str, str]:
    """metrics key -> (TensorBoard tag, series; see `RunLogger.scalar`): train_loss -> ("loss",
    "train"), val_acc -> ("accuracy", "val"), param_free_normal -> ("run/param_free", "normal"),
    lr -> ("run/lr", "")."""
    for metric, group in (("_loss", "loss"), ("_acc", "accuracy")):
        if key.endswith(metric):
            return group, key[: -len(metric)]
    for kind in ("normal", "reduce"):
        if key.endswith(f"_{kind}"):
            return f"run/{key[: -len(kind) - 1]}", kind
    return f"run/{key}", ""


def _exactly(tags: list[str]) -> str:
    """The regular expression a custom-scalars chart matches tags with (TensorBoard calls
    `re.match`, which anchors only the start) that matches exactly `tags`."""
    return f"^(?:{'|'.join(re.escape(tag) for tag in tags)})$"
