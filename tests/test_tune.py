"""nas tune: declarations, pruning from the engine's epoch reports, studies that resume, record
failures and are shared by two workers, and trials that run under DDP.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from nas.cli import main
from nas.config import TrainConfig, apply_dict
from nas.errors import NasError
from nas.logging import RunLogger
from nas.runtime import Engine, StepResult, Task
from nas.runtime.dist import Runtime
from nas.tune.commands import TUNABLE_COMMANDS
from nas.tune.config import ParamSpec, TuneConfig, parse_params, parse_tune_section, set_tune_value
from nas.tune.trial import EpochReporter, TrialPruned, suggest, trial_config
from tests.conftest import jsonl_rows, run_nas

optuna = pytest.importorskip("optuna")

CPU = Runtime(rank=0, world_size=1, device=torch.device("cpu"))

# DARTS_V2, 3 cells, C=4, on 64 synthetic 8x8 images: about a second per trial.
TINY = {
    "data": {
        "name": "synthetic",
        "batch_size": 16,
        "augment": False,
        "cutout": 0,
        "synthetic_samples": 64,
        "synthetic_image_size": 8,
        "synthetic_channels": 1,
        "synthetic_classes": 3,
    },
    "model": {
        "genotype": "DARTS_V2",
        "layers": 3,
        "channels": 4,
        "auxiliary_weight": 0.0,
        "drop_path": 0.0,
    },
    "run": {"epochs": 2, "device": "cpu"},
}
LR = {"type": "float", "low": 1e-3, "high": 0.3, "log": True}


def _config(tmp_path: Path, params: dict, **tune) -> Path:
    data = {
        **TINY,
        "tune": {
            "command": "train",
            "sampler": "random",
            "pruner": "asha",
            "trials": 3,
            **tune,
            "params": params,
        },
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _study(out: Path, name: str = "tiny"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")


def _states(study) -> list[str]:
    return [t.state.name for t in study.get_trials()]


# --- declarations ----------------------------------------------------------------------------


def test_declarations_are_parsed_with_yaml_exponents_and_steps() -> None:
    text = """
    train.lr: {type: float, low: 1e-3, high: 1e-1, log: true}
    model.layers: {type: int, low: 2, high: 8, step: 2}
    data.batch_size: {type: categorical, choices: [16, 32]}
    train.momentum: {type: float, low: 0.5, high: 0.9, step: 0.2}
    """
    specs = parse_params(yaml.safe_load(text), TrainConfig)  # YAML reads 1e-3 as a string
    assert specs["train.lr"] == ParamSpec("train.lr", "float", low=1e-3, high=0.1, log=True)
    assert specs["model.layers"].grid_values() == [2, 4, 6, 8]
    assert specs["data.batch_size"].grid_values() == [16, 32]
    assert specs["train.momentum"].grid_values() == pytest.approx([0.5, 0.7, 0.9])
    with pytest.raises(NasError, match="train.lr: the grid sampler needs a finite set"):
        specs["train.lr"].grid_values()


@pytest.mark.parametrize(
    "params,message",
    [
        ({"train.lrr": LR}, r"tune.params.train.lrr: unknown config field .*mean 'train.lr'"),
        ({"strategy.weight_lr": LR}, r"unknown config field 'strategy.weight_lr'"),  # search only
        ({"train.lr": {**LR, "low": 0.5}}, r"train.lr: low \(0.5\) must be below high"),
        ({"train.lr": {**LR, "low": 0}}, r"train.lr: a log-scale range needs low > 0"),
        ({"train.lr": {**LR, "step": 0.1}}, "train.lr: log and step cannot be used together"),
        ({"train.lr": {**LR, "lg": True}}, r"train.lr: float takes .*, not 'lg'"),
        ({"train.lr": {"type": "uniform"}}, "train.lr: type must be one of float, int"),
        ({"train.lr": {"type": "float", "low": 0.1}}, "train.lr: float needs high"),
        ({"train.lr": {"type": "float", "low": "a", "high": 1}}, "low must be a number"),
        ({"model.layers": {"type": "float", "low": 1, "high": 4}}, "not a float field"),
        ({"model.layers": {"type": "int", "low": 1.5, "high": 4}}, "must be whole"),
        ({"model.network": {"type": "int", "low": 1, "high": 4}}, "not a number field"),
        ({"data.batch_size": {"type": "categorical", "choices": []}}, "non-empty list"),
        ({"data.batch_size": {"type": "categorical", "choices": [16, "big"]}}, "expected int"),
        ({"data.batch_size": {"type": "categorical", "choices": [[1, 2]]}}, "not a number"),
        ({"run.out": {"type": "categorical", "choices": ["a"]}}, "set by nas tune itself"),
        ({}, "tune.params is empty"),
    ],
)
def test_bad_declarations_name_the_field(params: dict, message: str) -> None:
    with pytest.raises(NasError, match=message):
        parse_params(params, TrainConfig)


@pytest.mark.parametrize(
    "section,message",
    [
        ({"trails": 3, "params": {"train.lr": LR}}, r"unknown setting tune.trails.*'tune.trials'"),
        ({"sampler": "cmaes", "params": {"train.lr": LR}}, "tune.sampler must be one of random"),
        ({"pruner": "median", "params": {"train.lr": LR}}, "tune.pruner must be one of none"),
        ({"trials": 0, "params": {"train.lr": LR}}, "tune.trials must be at least 1"),
        ({"timeout": 0, "params": {"train.lr": LR}}, "tune.timeout must be a positive number"),
        ({"holdout": 1, "params": {"train.lr": LR}}, r"tune.holdout must be a fraction"),
    ],
)
def test_bad_tune_settings_are_errors(section: dict, message: str) -> None:
    with pytest.raises(NasError, match=message):
        parse_tune_section(section, TrainConfig)


@pytest.mark.parametrize("name", ["params", "params.train.lr"])
def test_params_cannot_be_set_from_the_command_line(name: str) -> None:
    with pytest.raises(NasError, match="tune.params is declared in the --config file"):
        set_tune_value(TuneConfig(), name, 1)


def test_suggested_values_stay_in_their_ranges_and_reach_the_config() -> None:
    specs = parse_params(
        {
            "train.lr": LR,
            "model.layers": {"type": "int", "low": 2, "high": 6, "step": 2},
            "data.batch_size": {"type": "categorical", "choices": [8, 16]},
        },
        TrainConfig,
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        params = suggest(study.ask(), specs)
        assert 1e-3 <= params["train.lr"] <= 0.3
        assert params["model.layers"] in (2, 4, 6) and params["data.batch_size"] in (8, 16)
        seen.add(params["model.layers"])
        config = trial_config(_train_command(), TINY, ["train.momentum=0.5"], params)
        assert config.train.lr == params["train.lr"] and config.train.momentum == 0.5
        assert config.model.layers == params["model.layers"]
    assert seen == {2, 4, 6}


def _train_command():
    from nas.tune.commands import get_command

    return get_command("train")


# --- pruning from the engine's epoch reports ---------------------------------------------------


class _Curve(Task):
    """val_acc follows a given curve, one value per epoch; trains nothing."""

    def __init__(self, curve: list[float]) -> None:
        self.curve, self.epoch = curve, 0

    def steps_per_epoch(self) -> int:
        return 1

    def batches(self, epoch: int):
        self.epoch = epoch
        return [None]

    def step(self, batch) -> StepResult:
        return StepResult(torch.tensor(1.0), torch.tensor(1), 1)

    def evaluate(self) -> dict[str, float]:
        return {"val_acc": self.curve[self.epoch]}

    def state_dict(self) -> dict:
        return {}


class _PruneFromEpoch(optuna.pruners.BasePruner):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def prune(self, study, trial) -> bool:
        return trial.last_step is not None and trial.last_step >= self.epoch


def _engine(tmp_path: Path, curve: list[float], trial) -> tuple[Engine, EpochReporter]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    reporter = EpochReporter(trial, "val_acc", CPU)
    logger = RunLogger(tmp_path)
    return Engine(_Curve(curve), CPU, logger, tmp_path, len(curve), [reporter]), reporter


def test_every_epoch_is_reported_and_the_pruner_stops_the_engine(tmp_path) -> None:
    study = optuna.create_study(direction="maximize", pruner=_PruneFromEpoch(2))
    trial = study.ask()
    engine, reporter = _engine(tmp_path, [0.1, 0.2, 0.3, 0.4], trial)
    with pytest.raises(TrialPruned, match="after epoch 2"):
        engine.run()
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert study.trials[0].intermediate_values == {1: 0.1, 2: 0.2}
    assert reporter.values == [0.1, 0.2]
    assert [row["epoch"] for row in jsonl_rows(tmp_path)] == [1, 2]  # stopped right there
    # Without pruning, the same hook lets every epoch run.
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    engine, _ = _engine(tmp_path / "b", [0.1, 0.2, 0.3, 0.4], trial)
    assert engine.run()["val_acc"] == 0.4
    assert study.trials[0].intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4}


def test_asha_prunes_a_trial_that_falls_behind_at_the_first_rung(tmp_path) -> None:
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    good = study.ask()
    engine, _ = _engine(tmp_path / "good", [0.8, 0.9, 0.95], good)
    study.tell(good, engine.run()["val_acc"])
    bad = study.ask()
    engine, reporter = _engine(tmp_path / "bad", [0.1, 0.2, 0.3], bad)
    with pytest.raises(TrialPruned):
        engine.run()
    assert reporter.values == [0.1]  # pruned at rung 0 (epoch 1): below the top half


def test_a_metric_the_command_does_not_log_is_an_error(tmp_path) -> None:
    engine, reporter = _engine(tmp_path, [0.5], None)
    reporter.metric = "test_acc"
    with pytest.raises(NasError, match="tune.metric 'test_acc' is not in the epoch metrics"):
        engine.run()


# --- the command ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_tune_writes_trials_best_yaml_hparams_plot_and_resumes(tmp_path, capsys) -> None:
    config, out = _config(tmp_path, {"train.lr": LR}, trials=2), tmp_path / "study"
    command = ["tune", "--config", str(config), "--out", str(out)]
    assert main(command) == 0
    printed = capsys.readouterr()
    study = _study(out)
    assert len(study.trials) == 2 and "FAIL" not in _states(study)
    assert "study tiny: 2 trials: " in printed.out and "best trial" in printed.out
    # Off a terminal: one line per trial and no progress bar redrawing itself.
    assert "trial 0: " in printed.err and "trial 1: " in printed.err and "\r" not in printed.err
    for trial in study.trials:  # each trial is a normal run directory with its parameters
        run = out / f"trial-{trial.number:04d}"
        saved = yaml.safe_load((run / "config.yaml").read_text())
        assert saved["train"]["lr"] == trial.params["train.lr"]
        rows = jsonl_rows(run)
        assert [row["epoch"] for row in rows][-1] == len(trial.intermediate_values)
        # Trials select on held-out training data (tune.holdout), never on the test split.
        assert "val_acc" in rows[0] and "test_acc" not in rows[0]
        assert trial.intermediate_values[1] == rows[0]["val_acc"]
    best = TrainConfig()
    apply_dict(best, yaml.safe_load((out / "best.yaml").read_text()), "best.yaml")
    assert best.train.lr == study.best_params["train.lr"] and best.run.out is None
    assert best.model.genotype == "DARTS_V2" and best.model.layers == 3
    hparams = sorted(p.name for p in (out / "tb").iterdir() if p.is_dir())
    assert hparams == [f"trial-{t.number:04d}" for t in study.trials if t.intermediate_values]
    assert (out / "best_value.png").stat().st_size > 1000

    # The same command with a larger budget continues the study.
    first = [t.params for t in study.trials]
    assert main([*command, "--trials", "3"]) == 0
    study = _study(out)
    assert [t.params for t in study.trials][:2] == first and len(study.trials) == 3
    assert study.trials[2].params not in first  # a resumed sampler does not replay its draws
    assert main([*command, "--trials", "3"]) == 0  # the budget is reached: nothing new
    assert len(_study(out).trials) == 3
    assert "continuing, 3 of 3 trials done" in capsys.readouterr().err
    assert main([*command, "--set", "train.momentum=0.5"]) == 2  # another study: refused
    assert "changed: train.momentum" in capsys.readouterr().err


# One tiny config and one tuned field per tunable command: a command registered without an entry
# here fails the test below.
COMMAND_CASES = {
    "search": (
        {
            "data": {**TINY["data"], "batch_size": 8},
            "model": {"space": "tiny", "layers": 3, "channels": 4},
            "run": {"epochs": 2, "device": "cpu"},
        },
        "strategy.weight_lr",
    ),
    "train": (TINY, "train.lr"),
}


@pytest.mark.parametrize("name", TUNABLE_COMMANDS.names())
def test_every_tunable_command_runs_a_trial_that_reports_each_epoch(tmp_path, name) -> None:
    sections, field = COMMAND_CASES[name]
    data = {
        **sections,
        "tune": {"command": name, "trials": 1, "sampler": "random", "params": {field: LR}},
    }
    config, out = tmp_path / "tiny.yaml", tmp_path / "study"
    config.write_text(yaml.safe_dump(data))
    assert main(["tune", "--config", str(config), "--out", str(out)]) == 0
    (trial,) = _study(out).trials
    assert trial.state.name == "COMPLETE", trial.user_attrs
    rows = jsonl_rows(out / "trial-0000")
    assert trial.intermediate_values == {row["epoch"]: row["val_acc"] for row in rows}
    assert trial.value == rows[-1]["val_acc"] and len(rows) == 2
    saved = yaml.safe_load((out / "trial-0000" / "config.yaml").read_text())
    section, key = field.split(".")
    assert saved[section][key] == trial.params[field]


def test_train_trials_hold_out_part_of_the_training_split() -> None:
    from nas.data import load_dataset
    from nas.genotype import load_genotype
    from nas.tune.holdout import holdout_train_task

    config = trial_config(_train_command(), TINY, [], {})
    task = holdout_train_task(config, load_genotype("DARTS_V2"), CPU, 0.25)
    whole = load_dataset(config.data)
    train, held = task.train_set.tensors[0], task.val_set.tensors[0]
    assert len(train) + len(held) == len(whole.train)
    assert len(held) == round(0.25 * len(whole.train))
    rows = {tuple(x.flatten().tolist()) for x in whole.train.tensors[0]}
    assert all(tuple(x.flatten().tolist()) in rows for x in held)  # taken from training data
    assert set(task.evaluate()) == {"val_loss", "val_acc"}


def test_a_failed_trial_is_recorded_and_the_study_goes_on(tmp_path, capsys) -> None:
    # lr_min=1.0 is above lr: that trial's config is refused when it is built.
    params = {"train.lr_min": {"type": "categorical", "choices": [0.0, 1.0]}}
    config, out = _config(tmp_path, params, sampler="grid", trials=5), tmp_path / "study"
    assert main(["tune", "--config", str(config), "--out", str(out)]) == 0
    study = _study(out)
    assert sorted(_states(study)) == ["COMPLETE", "FAIL"]  # the grid has 2 points
    failed = next(t for t in study.trials if t.state.name == "FAIL")
    assert failed.params == {"train.lr_min": 1.0}
    assert "train.lr_min must be between 0 and train.lr" in failed.user_attrs["error"]
    assert "NasError" in (out / f"trial-{failed.number:04d}" / "error.txt").read_text()
    assert "1 completed, 0 pruned, 1 failed" in capsys.readouterr().out


def test_a_trial_left_running_by_a_killed_worker_is_failed_and_queued_again(tmp_path) -> None:
    from nas.tune.study import counted_trials, recover_stale_trials, start_trial

    study = optuna.create_study()
    alive = start_trial(study)
    dead = start_trial(study)
    dead.suggest_float("x", 0, 1)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead.set_user_attr("pid", int(gone.stdout))
    assert recover_stale_trials(study) == [dead.number]
    assert [t.state.name for t in study.trials] == ["RUNNING", "FAIL", "WAITING"]
    assert len(counted_trials(study)) == 1  # the retried failure does not use up the budget
    retry = study.ask()  # the queued trial comes first, with the dead trial's parameters
    assert retry.suggest_float("x", 0, 1) == dead.params["x"] and alive.number == 0
    assert retry.user_attrs["retry_of"] == dead.number


def test_declaration_errors_and_missing_optuna_are_one_line_errors(
    tmp_path, capsys, monkeypatch
) -> None:
    bad = _config(tmp_path, {"train.lrr": LR})
    assert main(["tune", "--config", str(bad), "--out", str(tmp_path / "a")]) == 2
    assert "nas: error: tune.params.train.lrr: unknown config field" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if the hpo extra were not installed
    good = _config(tmp_path, {"train.lr": LR})
    assert main(["tune", "--config", str(good), "--out", str(tmp_path / "b")]) == 2
    assert "install the hpo extra: pip install 'nasforge[hpo]'" in capsys.readouterr().err


def test_no_trial_starts_after_the_timeout(tmp_path, capsys) -> None:
    config, out = _config(tmp_path, {"train.lr": LR}), tmp_path / "study"
    assert main(["tune", "--config", str(config), "--out", str(out), "--timeout", "1e-9"]) == 0
    assert _study(out).trials == [] and "no trial completed yet" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for CPU devices")
def test_the_study_runs_with_the_configs_sync_batchnorm(tmp_path, capsys) -> None:
    config = _config(tmp_path, {"train.lr": LR})
    data = yaml.safe_load(config.read_text())
    # a setting of the runtime, which the study starts: on auto (the CPU here) it is refused
    data["run"].update(sync_batchnorm=True, device="auto")
    config.write_text(yaml.safe_dump(data))
    assert main(["tune", "--config", str(config), "--out", str(tmp_path / "s")]) == 2
    assert "run.sync_batchnorm needs CUDA devices" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_import_nas_and_the_cli_do_not_import_optuna() -> None:
    code = "import sys, nas, nas.cli, nas.tune; print('optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- several workers, several processes ------------------------------------------------------


@pytest.mark.slow
def test_two_workers_share_one_journal_storage(tmp_path) -> None:
    config = _config(tmp_path, {"train.lr": LR}, trials=4, pruner="none")
    out, journal = tmp_path / "study", tmp_path / "journal.log"
    command = [
        sys.executable,
        "-m",
        "nas",
        "tune",
        "--config",
        str(config),
        "--out",
        str(out),
        "--storage",
        str(journal),
        "--set",
        "run.epochs=1",
    ]
    workers = [
        subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    storage = optuna.storages.journal.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    trials = optuna.load_study(study_name="tiny", storage=storage).trials
    # Both workers stop once the study holds 4 trials (one more if both asked at once).
    assert 4 <= len(trials) <= 5
    assert {t.state.name for t in trials} == {"COMPLETE"}
    assert {t.user_attrs["pid"] for t in trials} == {worker.pid for worker in workers}
    assert len({t.params["train.lr"] for t in trials}) == len(trials)  # no duplicate draws
    assert sorted(p.name for p in out.glob("trial-*")) == [f"trial-{t.number:04d}" for t in trials]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _broadcast_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        runtime = Runtime(rank=rank, world_size=2, device=torch.device("cpu"))
        got = runtime.broadcast_object({"number": 7, "params": {"train.lr": 0.1 + rank}})
        Path(f"{out}.{rank}").write_text(yaml.safe_dump(got))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_broadcast_object_gives_every_rank_rank0s_value(tmp_path) -> None:
    out = str(tmp_path / "got")
    mp.spawn(_broadcast_worker, args=(_free_port(), out), nprocs=2, join=True)
    for rank in range(2):
        assert yaml.safe_load(Path(f"{out}.{rank}").read_text())["params"]["train.lr"] == 0.1


@pytest.mark.distributed
@pytest.mark.slow
def test_a_ddp_trial_trains_rank0s_parameters_on_every_rank(tmp_path) -> None:
    # The channels change every weight's shape: DDP refuses to start (and the trial fails) unless
    # rank 1 builds exactly the network rank 0 sampled.
    params = {"model.channels": {"type": "categorical", "choices": [4, 6]}, "train.lr": LR}
    config, out = _config(tmp_path, params, trials=2, pruner="none"), tmp_path / "study"
    result = run_nas("tune", "--config", str(config), "--out", str(out), "--nproc-per-node", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    study = _study(out)
    assert _states(study) == ["COMPLETE", "COMPLETE"], [t.user_attrs for t in study.trials]
    for trial in study.trials:
        run = out / f"trial-{trial.number:04d}"
        assert "world_size: 2" in (run / "config.yaml").read_text()
        assert [row["epoch"] for row in jsonl_rows(run)] == [1, 2]  # rank 0 logs, once
        assert list(trial.intermediate_values) == [1, 2]  # rank 0 reports, once per epoch
    assert result.stdout.count("best trial") == 1
