"""What `nas tune` leaves behind: the summary table, best.yaml, the TensorBoard hparams view and
the best-value-against-wall-time plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas.errors import NasError
from nas.io import atomic_write_text
from nas.optional import optional_import
from nas.tune.study import ERROR_ATTR, counted_trials, import_optuna


def state_counts(study: Any) -> dict[str, int]:
    """Trials of the budget by state: complete, pruned, fail, running."""
    counts = {"complete": 0, "pruned": 0, "fail": 0, "running": 0}
    for trial in counted_trials(study):
        name = trial.state.name.lower()
        counts[name] = counts.get(name, 0) + 1
    return counts


def best_trial(study: Any) -> Any | None:
    """The best completed trial, or None."""
    states = import_optuna().trial.TrialState
    if not study.get_trials(deepcopy=False, states=(states.COMPLETE,)):
        return None
    return study.best_trial


def summary_table(study: Any, metric: str, top: int = 5) -> str:
    """Counts, the best trial's value and parameters, and the `top` completed trials."""
    counts = state_counts(study)
    lines = [
        f"study {study.study_name}: {sum(counts.values())} trials: {counts['complete']} "
        f"completed, {counts['pruned']} pruned, {counts['fail']} failed"
        + (f", {counts['running']} running" if counts["running"] else "")
    ]
    best = best_trial(study)
    if best is None:
        lines.append("no trial completed yet")
        failed = [t for t in counted_trials(study) if t.state.name == "FAIL"]
        if failed:
            last = failed[-1]
            lines.append(f"last failure (trial {last.number}): {last.user_attrs.get(ERROR_ATTR)}")
        return "\n".join(lines)
    lines.append(f"best trial {best.number}: {metric} {best.value:.4f}")
    width = max(len(key) for key in best.params)
    lines += [f"  {key:<{width}}  {_format(value)}" for key, value in best.params.items()]
    complete = [t for t in counted_trials(study) if t.state.name == "COMPLETE"]
    maximize = study.direction.name == "MAXIMIZE"
    complete.sort(key=lambda t: t.value, reverse=maximize)
    keys = list(best.params)
    header = ["trial", metric, *keys]
    rows = [
        [str(t.number), f"{t.value:.4f}", *(_format(t.params.get(k)) for k in keys)]
        for t in complete[:top]
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines.append(f"top {len(rows)} of {len(complete)} completed:")
    for row in [header, *rows]:
        lines.append("  " + "  ".join(cell.rjust(width) for cell, width in zip(row, widths)))
    return "\n".join(lines)


def write_best_yaml(path: Path, config: Any, trial: Any, metric: str, reproduce: str) -> None:
    """A config that reproduces `trial`: its resolved config without the run directory."""
    import yaml

    data = config.to_dict()
    data["run"]["out"] = None
    params = ", ".join(f"{key}={_format(value)}" for key, value in trial.params.items())
    header = (
        f"# Best trial {trial.number} of the study: {metric} {trial.value:.4f} ({params}).\n"
        f"# Reproduce it: {reproduce}\n"
    )
    atomic_write_text(path, header + yaml.safe_dump(data, sort_keys=False))


class HparamsLog:
    """TensorBoard's hparams view across trials: one run per trial under `tb_dir`, holding the
    trial's parameters, its state, the metric of its last epoch and the epochs it ran.
    """

    def __init__(self, tb_dir: Path) -> None:
        self.tb_dir = tb_dir
        self._writer: Any = None

    def add(
        self,
        trial_number: int,
        params: dict[str, Any],
        outcome: str,
        metric: str,
        values: list[float],
    ) -> None:
        """Log one finished trial (nothing if it reported no epoch)."""
        if not values:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter  # lazy: keeps `import nas` fast

            self._writer = SummaryWriter(str(self.tb_dir))
        hparams = {key: _hparam(value) for key, value in params.items()}
        hparams["state"] = outcome
        metrics = {f"hparam/{metric}": values[-1], "hparam/epochs": float(len(values))}
        self._writer.add_hparams(hparams, metrics, run_name=f"trial-{trial_number:04d}")

    def close(self) -> None:
        """Flush and close the writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def plot_best_value(path: Path, study: Any, metric: str) -> bool:
    """PNG of every completed trial's value and the best so far against wall time since the
    study's first trial. False (nothing written) without matplotlib or completed trials.
    """
    try:
        matplotlib = optional_import("matplotlib", "the study plot")
    except NasError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = [t for t in counted_trials(study) if t.state.name == "COMPLETE"]
    if not trials:
        return False
    starts = [t.datetime_start for t in counted_trials(study) if t.datetime_start is not None]
    origin = min(starts)
    trials.sort(key=lambda t: t.datetime_complete)
    times = [(t.datetime_complete - origin).total_seconds() for t in trials]
    maximize = study.direction.name == "MAXIMIZE"
    best, running = [], None
    for trial in trials:
        better = running is None or (trial.value > running if maximize else trial.value < running)
        running = trial.value if better else running
        best.append(running)
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.scatter(times, [t.value for t in trials], s=12, alpha=0.5, label="completed trial")
    axes.step(times, best, where="post", label="best so far")
    axes.set_xlabel("wall time since the first trial started (s)")
    axes.set_ylabel(metric)
    axes.set_title(f"study {study.study_name}")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def _hparam(value: Any) -> Any:
    return value if isinstance(value, bool | int | float | str) else str(value)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
