"""`nas tune`: a hyperparameter study over a command's config, one trial after another.

Every process runs this loop. Rank 0 owns the study: it asks for a trial, samples its parameters
and broadcasts them; all ranks train the trial together (DDP); rank 0 alone reports to the study.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.config import load_yaml, parse_assignment
from nas.errors import NasError
from nas.ownership import check_study_folder, write_marker
from nas.tune.commands import TunableCommand, get_command
from nas.tune.config import TuneConfig, parse_tune_section, set_tune_value
from nas.tune.study import check_grid, check_storage, grid_points
from nas.tune.trial import EpochReporter, TrialPruned, run_trial, suggest, trial_config

# What may differ between the tune.yaml of a study and a later run of it.
RESUMABLE_CHANGES = {"tune.trials", "tune.timeout", "run.device"}


@dataclass
class _Plan:
    """Everything a `nas tune` command resolved before the study opens."""

    command: TunableCommand
    tune: TuneConfig
    base: dict[str, Any]
    overrides: list[str]
    metric: str
    direction: str
    study_name: str
    out: Path
    device: str
    sync_batchnorm: bool
    # The pruners' budget; None when the epochs are themselves tuned.
    max_epochs: int | None


def plan(args: argparse.Namespace, flag_settings: list[tuple[str, Any]]) -> _Plan:
    """Read the config, --set and the flags that set config keys (`flag_settings`: key, value);
    check the command config and the search space. Raises NasError.
    """
    if not args.config:
        raise NasError("nas tune needs --config FILE with a tune: section (see docs/tuning.md)")
    raw = load_yaml(args.config)
    if not isinstance(raw, dict) or not isinstance(raw.get("tune"), dict):
        raise NasError(f"{args.config}: no tune: section; declare tune: params: (docs/tuning.md)")
    base = {key: value for key, value in raw.items() if key != "tune"}
    command_name = str(raw["tune"].get("command", TuneConfig.command))
    command = get_command(command_name)
    tune = parse_tune_section(raw["tune"], command.config_class)
    overrides = []
    for text in args.overrides:
        key, value = parse_assignment(text)
        if key.startswith("tune."):
            set_tune_value(tune, key.removeprefix("tune."), value)
        else:
            overrides.append(text)
    for key, value in flag_settings:  # flags override --set
        if key.startswith("tune."):
            set_tune_value(tune, key.removeprefix("tune."), value)
        else:
            overrides.append(f"{key}={value}")
    if tune.command != command_name:
        raise NasError("tune.command chooses the config's sections: set it in the --config file")
    if tune.sampler == "grid":
        check_grid(tune.params)  # finitely many values, and not too many points
    if args.storage is not None:
        check_storage(args.storage)
    metrics = command.metrics(tune)
    metric = tune.metric or metrics[0]
    if metric not in metrics:
        raise NasError(
            f"tune.metric {metric!r} is not reported by nas {tune.command} trials; choose one of "
            f"{', '.join(metrics)}"
        )
    direction = tune.direction or ("minimize" if metric.endswith("loss") else "maximize")
    config = trial_config(command, base, overrides, {})  # the config must be valid untuned
    study_name = args.study or tune.study or Path(args.config).stem
    out = Path(args.out or f"runs/tune-{study_name}")
    check_study_folder(out)
    max_epochs = None if "run.epochs" in tune.params else config.run.epochs
    return _Plan(
        command,
        tune,
        base,
        overrides,
        metric,
        direction,
        study_name,
        out,
        config.run.device,
        config.run.sync_batchnorm,
        max_epochs,
    )


def tune_main(args: argparse.Namespace, flag_settings: list[tuple[str, Any]]) -> int:
    """Run `nas tune` (see `plan` for `flag_settings`); its exit status."""
    from nas.runs import start_runtime

    setup = plan(args, flag_settings)
    runtime = start_runtime(setup.device, setup.sync_batchnorm)
    with runtime.until_done():
        study = _open(setup, args) if runtime.is_main else None
        return _loop(setup, study, runtime)


def _open(setup: _Plan, args: argparse.Namespace) -> Any:
    """Write or check tune.yaml, open the study, recover trials of killed workers."""
    import numpy as np

    from nas.tune import study as studies

    write_marker(setup.out, "tune")
    _check_tune_yaml(setup)
    storage, where = studies.make_storage(args.storage, setup.out)
    tune = setup.tune
    if tune.sampler == "grid":
        size = len(grid_points(tune.params, tune.seed))
        if tune.trials > size:
            print(f"nas tune: the grid has {size} points; running {size} trials", file=sys.stderr)
            tune.trials = size
    probe = studies.open_study(storage, setup.study_name, setup.direction, None, None)
    done = len(studies.counted_trials(probe))
    # A resumed or parallel worker must not replay the first worker's random draws.
    entropy = [tune.seed, done] + ([os.getpid()] if args.storage else [])
    seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
    study = studies.open_study(
        storage,
        setup.study_name,
        setup.direction,
        studies.make_sampler(tune, seed),
        studies.make_pruner(tune, setup.max_epochs),
    )
    if tune.sampler == "grid":
        studies.enqueue_grid(study, tune.params, tune.seed)
    stale = studies.recover_stale_trials(study)
    if stale:
        print(
            f"nas tune: trials {stale} were left running by a stopped worker; queued again",
            file=sys.stderr,
        )
    state = f"continuing, {done} of {tune.trials} trials done" if done else "new study"
    print(
        f"nas tune: study {setup.study_name} ({where}; {state}), nas {tune.command}, sampler "
        f"{tune.sampler}, pruner {tune.pruner}, {setup.direction} {setup.metric}, run dir "
        f"{setup.out}",
        file=sys.stderr,
    )
    return study


def _loop(setup: _Plan, study: Any, runtime: Any) -> int:
    """Trials until the study holds `tune.trials` of them; the summary at the end."""
    from tqdm import tqdm

    from nas.logging import is_terminal
    from nas.tune import study as studies
    from nas.tune.report import HparamsLog

    bar, hparams = None, HparamsLog(setup.out / "tb")
    started = time.monotonic()
    timeout = setup.tune.timeout
    if runtime.is_main:
        done = len(studies.counted_trials(study))
        bar = tqdm(
            total=setup.tune.trials,
            initial=min(done, setup.tune.trials),
            desc="trials",
            unit="trial",
            file=sys.stderr,
            dynamic_ncols=True,
            disable=not is_terminal(sys.stderr),  # in a log: the one line per trial instead
        )
        _show_best(bar, study)
    while True:
        trial, job = None, None
        in_time = timeout is None or time.monotonic() - started < timeout
        if runtime.is_main and in_time and len(studies.counted_trials(study)) < setup.tune.trials:
            trial = studies.start_trial(study)
            job = {"number": trial.number, "params": suggest(trial, setup.tune.params)}
        job = runtime.broadcast_object(job)
        if job is None:
            break
        reporter = EpochReporter(trial, setup.metric, runtime)
        try:
            outcome, value, error = _run_one(setup, job, runtime, reporter)
        except KeyboardInterrupt:
            if trial is not None:
                studies.retry_trial(study, trial)
                print(
                    f"\nnas tune: interrupted; trial {job['number']} is queued again. Continue "
                    "with the same nas tune command",
                    file=sys.stderr,
                )
            hparams.close()
            return 130
        if trial is None:
            continue
        studies.finish_trial(study, trial, outcome, value, error)
        hparams.add(job["number"], job["params"], outcome, setup.metric, reporter.values)
        tqdm.write(_trial_line(job, outcome, value, error, setup.metric, reporter), sys.stderr)
        bar.n = min(len(studies.counted_trials(study)), setup.tune.trials)
        _show_best(bar, study)
    hparams.close()
    if bar is not None:
        bar.close()
        _finish(setup, study)
    return 0


def _run_one(
    setup: _Plan, job: dict[str, Any], runtime: Any, reporter: EpochReporter
) -> tuple[str, float | None, str]:
    """(outcome, value, error) of one trial, on every process. A failure is recorded, not
    raised, so the study goes on.
    """
    run_dir = setup.out / f"trial-{job['number']:04d}"
    try:
        config = trial_config(setup.command, setup.base, setup.overrides, job["params"])
        record = run_trial(setup.command, setup.tune, config, run_dir, runtime, reporter)
    except TrialPruned:
        return "pruned", None, ""
    except Exception as err:  # noqa: BLE001 - a failed trial must not stop the study
        error = str(err) if isinstance(err, NasError) else f"{type(err).__name__}: {err}"
        if runtime.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "error.txt").write_text(traceback.format_exc())
        return "fail", None, error
    value = float(record[setup.metric])
    if not math.isfinite(value):
        return "fail", None, f"{setup.metric} is {value}"
    return "complete", value, ""


def _trial_line(
    job: dict[str, Any],
    outcome: str,
    value: float | None,
    error: str,
    metric: str,
    reporter: EpochReporter,
) -> str:
    params = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in job["params"].items()
    )
    epochs = len(reporter.values)
    if outcome == "complete":
        result = f"{metric} {value:.4f}"
    elif outcome == "pruned":
        result = f"pruned after epoch {epochs} ({metric} {reporter.values[-1]:.4f})"
    else:
        result = f"failed: {error}"
    return f"trial {job['number']}: {result} [{params}]"


def _show_best(bar: Any, study: Any) -> None:
    from nas.tune.report import best_trial

    best = best_trial(study)
    if best is not None:
        bar.set_postfix(best=f"{best.value:.4f}", trial=best.number)
    bar.refresh()


def _finish(setup: _Plan, study: Any) -> None:
    """Print the summary; write best.yaml and the plot."""
    from nas.tune.report import best_trial, plot_best_value, summary_table, write_best_yaml

    print(summary_table(study, setup.metric))
    best = best_trial(study)
    if best is not None:
        config = trial_config(setup.command, setup.base, setup.overrides, best.params)
        path = setup.out / "best.yaml"
        write_best_yaml(path, config, best, setup.metric, setup.command.reproduce)
        reproduce = setup.command.reproduce.replace("best.yaml", str(path))
        print(f"written: {path} (reproduce: {reproduce})")
    plot = setup.out / "best_value.png"
    if plot_best_value(plot, study, setup.metric):
        print(f"written: {plot}")
    else:
        print("no plot: it needs matplotlib (pip install 'nasforge[plot]') and a completed trial")
    print(f"trial run directories: {setup.out}/trial-NNNN")
    print(f"TensorBoard (HPARAMS tab): tensorboard --logdir {setup.out / 'tb'}")


def _check_tune_yaml(setup: _Plan) -> None:
    """First run: write tune.yaml. Later runs (resume, other workers): refuse a changed config."""
    import yaml

    from nas.config import load_yaml as read
    from nas.io import atomic_write_text
    from nas.runs import changed_keys

    config = trial_config(setup.command, setup.base, setup.overrides, {})
    data = config.to_dict()
    data["run"]["out"] = None
    data["tune"] = setup.tune.to_dict()
    path = setup.out / "tune.yaml"
    if not path.is_file():
        atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
        return
    saved = read(path) or {}
    changed = changed_keys(saved, data, RESUMABLE_CHANGES)
    if changed:
        raise NasError(
            f"{setup.out} holds a study started with another configuration (changed: "
            f"{', '.join(changed)}); re-run it with the same config (only --trials and --device "
            "may change) or choose another --out"
        )
