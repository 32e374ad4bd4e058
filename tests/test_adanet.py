"""AdaNet (`nas grow`): objective, freezing, selection, ensemble.json, CSV data, resume."""

from __future__ import annotations

import json
import math
import re
import signal

import pytest
import torch

from nas.adanet import GENERATORS, DataShape, Ensemble, load_ensemble, objective
from nas.adanet.candidates import Candidate
from nas.adanet.config import AdaNetConfig, GrowConfig
from nas.adanet.ensemble import mix, penalty, validate_ensemble
from nas.adanet.generators import MLPOptions
from nas.adanet.schedule import assign, num_shares, plan_round
from nas.cli import main
from nas.config import DataConfig, validate
from nas.data import CsvOptions, load_dataset
from nas.errors import NasError
from nas.runtime.dist import Runtime
from nas.runtime.engine import FAULT_ENV
from tests.conftest import jsonl_rows, run_nas

CPU = Runtime(rank=0, world_size=1, device=torch.device("cpu"))
SHAPE = DataShape(in_channels=1, image_size=8, num_classes=3)
# A small run: breast_cancer, 11 candidate steps per round, 2 + 2 epochs per iteration.
SMALL = [
    "grow",
    "--dataset",
    "breast_cancer",
    "--batch-size",
    "32",
    "--epochs",
    "2",
    "--iterations",
    "2",
    "--set",
    "adanet.mixture_epochs=2",
    "--set",
    "adanet.widths=[16]",
    "--set",
    "adanet.lr=0.01",
    "--set",
    "adanet.mixture_lr=0.05",
]


def _member(generator, architecture, reads=()):
    torch.manual_seed(1)
    return generator.build(architecture, list(reads))


def _built(generator, architecture: dict, members: list) -> torch.nn.Module:
    """`architecture` validated and built to read the hidden layers of `members` it names."""
    assert generator.validate(architecture, "proposal", len(members)) == architecture
    reads = architecture["reads"]
    module = generator.build(architecture, [members[i].hidden_size for i in reads])
    assert generator.complexity(architecture) == math.sqrt(architecture["depth"])
    assert generator.cost(architecture, [members[i].hidden_size for i in reads]) > 0
    return module


def _small_config(name: str) -> AdaNetConfig:
    """Generator `name` with its default options, CNN cells narrowed to keep the tests fast."""
    options = GENERATORS.options(name)()
    if hasattr(options, "cnn_channels"):
        options.cnn_channels = 2
    return AdaNetConfig(generator=name, options=options)


@pytest.mark.parametrize("name", GENERATORS.names())
def test_every_generator_proposes_distinct_candidates_that_build_and_train(name: str) -> None:
    """Conformance of a generator (the SubnetworkGenerator contract): at least one candidate, no
    repeats, each valid, buildable with the hidden layers it reads, and trainable."""
    config = _small_config(name)  # default depth: the smallest one
    generator = GENERATORS.get(name)(config, SHAPE)
    images, labels = torch.randn(4, 1, 8, 8), torch.randint(0, 3, (4,))
    members: list = []  # (architecture, module) of each member
    for _ in range(2):  # the first iteration, then one with a member to build on
        proposals = generator.propose([architecture for architecture, _ in members], [])
        assert len(proposals) >= 1
        assert len({json.dumps(a, sort_keys=True) for a in proposals}) == len(proposals)
        for architecture in proposals:
            module = _built(generator, architecture, [m for _, m in members])
            extra = [members[i][1](images, [])[1].detach() for i in architecture["reads"]]
            optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
            logits, hidden = module(images, extra)
            assert logits.shape == (4, 3) and hidden.shape == (4, module.hidden_size)
            torch.nn.functional.cross_entropy(logits, labels).backward()
            for parameter in module.parameters():
                assert parameter.grad is not None and parameter.grad.abs().sum() > 0
            before = [p.detach().clone() for p in module.parameters()]
            optimizer.step()
            assert all(not torch.equal(b, p) for b, p in zip(before, module.parameters()))
        with pytest.raises(NasError, match="proposal.depth"):
            generator.validate({**proposals[0], "depth": 0}, "proposal", len(members))
        members = [(proposals[0], _built(generator, proposals[0], []))]


@pytest.mark.parametrize(("name", "first_depth"), [("mlp", 1), ("cnn", 3)])
def test_built_in_generators_propose_the_newest_depth_and_one_more(
    name: str, first_depth: int
) -> None:
    generator = GENERATORS.get(name)(_small_config(name), SHAPE)
    assert {a["depth"] for a in generator.propose([], [])} == {first_depth, first_depth + 1}
    deeper = generator.propose([{"depth": first_depth + 1}], [])
    assert {a["depth"] for a in deeper} == {first_depth + 1, first_depth + 2}


def test_objective_is_cross_entropy_plus_complexity_penalty() -> None:
    logits = torch.randn(2, 5, 3)
    labels = torch.tensor([0, 1, 2, 1, 0])
    weights = torch.tensor([0.5, -2.0])
    # gamma_j = lambda * sqrt(depth_j) + beta, for depths 1 and 4, lambda 0.1, beta 0.01
    gammas = torch.tensor([0.1 * 1 + 0.01, 0.1 * 2 + 0.01])
    expected_mix = 0.5 * logits[0] - 2.0 * logits[1]
    expected = torch.nn.functional.cross_entropy(expected_mix, labels) + 0.11 * 0.5 + 0.21 * 2.0
    assert torch.allclose(objective(logits, labels, weights, gammas), expected)
    vector = torch.tensor([[1.0, 0.0, 2.0], [0.5, 0.5, -1.0]])  # one weight per class
    assert torch.allclose(mix(logits, vector), vector[0] * logits[0] + vector[1] * logits[1])
    assert penalty(vector, gammas).item() == pytest.approx(0.11 * 3.0 + 0.21 * 2.0)


def test_members_are_frozen_and_a_candidate_trains_alone() -> None:
    config = AdaNetConfig(options=MLPOptions(reuse_hidden=True, widths=[8]))
    generator = GENERATORS.get("mlp")(config, SHAPE)
    ensemble = Ensemble(num_classes=3, vector=False)
    first = {"kind": "mlp", "depth": 1, "width": 8, "reads": []}
    ensemble.add(_member(generator, first), first, 0, 1.0, 0.02, torch.tensor([1.0]))
    member = ensemble.members[0]
    assert not member.training and not any(p.requires_grad for p in member.parameters())
    ensemble.train()
    assert not member.training  # stays in eval mode
    before = {k: v.clone() for k, v in ensemble.state_dict().items()}
    (architecture,) = [a for a in generator.propose(ensemble.architectures, []) if a["depth"] == 1]
    assert architecture["reads"] == [0]  # reads the member's hidden layer
    candidate = Candidate(generator, architecture, 1, ensemble, 0, config, torch.device("cpu"))
    images, labels = torch.randn(6, 1, 8, 8), torch.randint(0, 3, (6,))
    _, hidden = ensemble.outputs(images)
    start = [p.clone() for p in candidate.module.parameters()]
    candidate.train_step(images, labels, hidden, CPU)
    assert all(not torch.equal(a, b) for a, b in zip(start, candidate.module.parameters()))
    after = ensemble.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in ensemble.parameters())
    member_ids = {id(p) for p in ensemble.parameters()}
    optimised = {id(p) for group in candidate.optimizer.param_groups for p in group["params"]}
    assert not member_ids & optimised  # no optimiser state for frozen members


def test_a_candidate_is_the_same_however_its_steps_are_split() -> None:
    config = AdaNetConfig(options=MLPOptions(widths=[8]))
    generator = GENERATORS.get("mlp")(config, SHAPE)
    data = torch.utils.data.TensorDataset(torch.randn(40, 1, 8, 8), torch.randint(0, 3, (40,)))
    architecture = generator.propose([], [])[0]

    def trained(splits: list[int]) -> Candidate:
        candidate = None
        for steps in splits:  # a new object per part, as after a forecast or a resume
            fresh = Candidate(
                generator, architecture, 2, Ensemble(3, False), 5, config, torch.device("cpu")
            )
            if candidate is not None:
                fresh.load_state_dict(candidate.state_dict())
            for _ in range(steps):
                fresh.train_step(*fresh.batch(data, fresh.steps, 8, CPU), [], CPU)
            candidate = fresh
        return candidate

    whole, parts = trained([7]), trained([3, 4])
    assert whole.steps == parts.steps == 7
    for a, b in zip(whole.module.parameters(), parts.module.parameters()):
        assert torch.equal(a, b)


def _run(tmp_path, *args: str) -> tuple:
    run = tmp_path / "run"
    assert main([*SMALL, *args, "--device", "cpu", "--out", str(run)]) == 0
    return run, jsonl_rows(run), jsonl_rows(run, "candidates.jsonl")


def test_grow_keeps_the_candidate_with_the_lowest_held_out_objective(tmp_path) -> None:
    run, metrics, candidates = _run(tmp_path, "--mixture", "vector")
    ends = [row for row in metrics if "objective" in row]
    previous, members = math.log(2), 0  # the empty ensemble predicts 50/50
    for end in ends:
        rows = [c for c in candidates if c["iteration"] == end["iteration"]]
        best = min(rows, key=lambda c: c["val_objective"])
        grew = best["val_objective"] < previous
        assert [c["chosen"] for c in rows] == [grew and c is best for c in rows]
        members += grew
        previous = best["val_objective"] if grew else previous
        assert end["members"] == members and end["objective"] == pytest.approx(previous)
    assert ends[0]["members"] == 1
    assert 0.9 < ends[-1]["test_acc"] <= 1 and 0.9 < ends[-1]["test_auc"] <= 1
    data = json.loads((run / "ensemble.json").read_text())
    assert [len(m["mixture_weight"]) for m in data["members"]] == [2] * members  # per class


def test_progress_bars_count_the_steps_each_epoch_takes(tmp_path, monkeypatch) -> None:
    # Candidate and mixture epochs differ in length: each bar's total is its own epoch's.
    from nas.logging import RunLogger

    bars, progress = [], RunLogger.progress

    def counting(iterable):
        for item in iterable:
            bars[-1][1] += 1
            yield item

    def counted(self, iterable, total, desc):
        bars.append([total, 0])
        return progress(self, counting(iterable), total, desc)

    monkeypatch.setattr(RunLogger, "progress", counted)
    _run(tmp_path, "--set", "adanet.mixture_epochs=3")
    assert len(bars) == 6 and all(total == steps for total, steps in bars), bars
    assert bars[2][1] != bars[0][1] and bars[2][1] % 3 == 0  # mixture: 3 held-out passes


def test_growth_stops_when_no_candidate_lowers_the_objective(tmp_path) -> None:
    # A complexity weight this large makes every ensemble worse than the empty one (log 2).
    _, metrics, candidates = _run(tmp_path, "--set", "adanet.complexity_weight=5")
    assert [row["members"] for row in metrics if "objective" in row] == [0]
    assert not any(c["chosen"] for c in candidates)
    assert metrics[-1]["objective"] == pytest.approx(math.log(2))


def test_force_grow_adds_a_member_anyway(tmp_path) -> None:
    _, metrics, _ = _run(tmp_path, "--set", "adanet.complexity_weight=5", "--force-grow")
    assert [row["members"] for row in metrics if "objective" in row] == [1, 2]


def test_ensemble_json_and_checkpoint_rebuild_the_same_predictions(tmp_path) -> None:
    run, metrics, _ = _run(tmp_path)
    ensemble, data = load_ensemble(run)
    assert validate_ensemble(json.loads(json.dumps(data))) == data  # JSON round trip
    test = load_dataset(DataConfig(name="breast_cancer")).test
    images, labels = test.tensors
    accuracy = (ensemble(images).argmax(1) == labels).float().mean().item()
    assert accuracy == pytest.approx(metrics[-1]["test_acc"])
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["task"]["ensemble"]
    trained = {k: v for k, v in ensemble.state_dict().items()}
    assert trained.keys() == last["state"].keys()
    assert all(torch.equal(trained[k], last["state"][k]) for k in trained)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda d: d.update(version=2), r"ensemble.version: unknown version 2"),
        (lambda d: d.update(generator="gbm"), r"ensemble.generator: unknown subnetwork generator"),
        (lambda d: d["members"][0].update(mixture_weight=[1.0]), r"members\[0\].mixture_weight"),
        (lambda d: d["members"][1]["architecture"].update(reads=[1]), r"members\[1\].+reads"),
        (lambda d: d["members"][0]["architecture"].update(width=-3), r"architecture.width"),
        (lambda d: d["members"][1].update(iteration=0), r"members\[1\].iteration"),
        (lambda d: d["data"].pop("mean"), r"ensemble.data: expected an object with the fields"),
    ],
)
def test_invalid_ensemble_json_names_the_field(tmp_path, change, message: str) -> None:
    data = {
        "format": "nasforge.ensemble",
        "version": 1,
        "generator": "mlp",
        "mixture": "scalar",
        "data": {
            "dataset": "digits",
            "in_channels": 1,
            "image_size": 8,
            "num_classes": 3,
            "mean": [0.0],
            "std": [1.0],
        },
        "objective": {
            "loss": "cross_entropy",
            "complexity": "sqrt_depth",
            "complexity_weight": 0.01,
            "complexity_bias": 0.0,
            "value": 0.5,
        },
        "members": [
            {
                "iteration": i,
                "mixture_weight": 0.5,
                "complexity": 1.0,
                "architecture": {"kind": "mlp", "depth": 1, "width": 4, "reads": []},
            }
            for i in range(2)
        ],
    }
    assert validate_ensemble(json.loads(json.dumps(data)))
    change(data)
    with pytest.raises(NasError, match=message):
        validate_ensemble(data)


def test_config_rejects_options_that_would_do_nothing() -> None:
    config = GrowConfig()
    config.set("adanet.forecast", False)  # forecasting belongs to the async schedule
    with pytest.raises(NasError, match="adanet.forecast applies to --schedule async"):
        validate(config)
    config = GrowConfig()
    config.set("adanet.cnn_channels", 4)  # the default generator is mlp
    with pytest.raises(NasError, match="adanet.cnn_channels does nothing here: it is an option"):
        validate(config)
    config = GrowConfig()
    config.set("data.target", "label")
    with pytest.raises(
        NasError, match="data.target does nothing here: it is an option of dataset 'csv'"
    ):
        validate(config)


def _csv(tmp_path, text: str) -> DataConfig:
    path = tmp_path / "table.csv"
    path.write_text(text)
    return DataConfig(name="csv", options=CsvOptions(data_file=str(path), target="label"))


def test_csv_dataset_reads_numeric_features_and_named_classes(tmp_path) -> None:
    rows = "".join(f"{i},{i % 3 * 1.5},{'yes' if i % 2 else 'no'}\n" for i in range(20))
    data = load_dataset(_csv(tmp_path, "a,b,label\n" + rows + "\n"))
    assert (data.in_channels, data.image_size, data.num_classes) == (2, 1, 2)
    assert len(data.train) + len(data.test) == 20
    labels = torch.cat([data.train.tensors[1], data.test.tensors[1]])
    assert sorted(labels.tolist()) == [0] * 10 + [1] * 10  # "no" -> 0, "yes" -> 1


@pytest.mark.parametrize(
    "text,message",
    [
        ("a,b\n1,2\n", r"no column 'label' for --target; the columns are \['a', 'b'\]"),
        ("a,label\n1,x\n2\n", r"row 3: 1 values, but the header has 2 columns"),
        ("a,label\n1,x\nfour,y\n", r"row 3, column 'a': 'four' is not a number"),
        ("a,label\n1,x\nnan,y\n", r"row 3: missing or infinite value"),
        ("a,label\n1,x\n2,x\n", r"column 'label' holds 1 class"),
        ("", r"empty file"),
    ],
)
def test_bad_csv_files_name_the_row_or_column(tmp_path, text: str, message: str) -> None:
    with pytest.raises(NasError, match=message):
        load_dataset(_csv(tmp_path, text))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The SMALL run, once for every resume test."""
    run = tmp_path_factory.mktemp("whole") / "run"
    assert main([*SMALL, "--out", str(run)]) == 0  # in-process: the killed runs are subprocesses
    return run


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault_step,first_redone",
    # 11 steps per engine epoch; iteration 2 is epochs 4-6: rounds 4 and 5, then the mixture
    # epoch 6 (2 passes x 2 batches). Killed in epoch 4 it resumes at the iteration boundary,
    # in epochs 5 and 6 inside the iteration (after a candidate round).
    [("39", 4), ("50", 5), ("58", 6)],
)
def test_killed_and_resumed_grow_matches_uninterrupted(
    tmp_path, uninterrupted, fault_step: str, first_redone: int
) -> None:
    killed = tmp_path / "killed"
    crashed = run_nas(*SMALL, "--out", str(killed), env={FAULT_ENV: fault_step})
    assert crashed.returncode == -signal.SIGKILL
    resumed = run_nas("grow", "--out", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"epochs {first_redone}..6" in resumed.stderr
    for name in ("metrics.jsonl", "candidates.jsonl"):
        assert jsonl_rows(uninterrupted, name) == jsonl_rows(killed, name)
    assert (uninterrupted / "ensemble.json").read_text() == (killed / "ensemble.json").read_text()


@pytest.mark.slow
@pytest.mark.distributed
def test_killed_and_resumed_async_grow_matches_uninterrupted(tmp_path) -> None:
    # Rank 1 is killed inside iteration 2 (11 steps per round per share; step 28 is in its
    # second round); the resumed run must end with the same ensemble, reports and forecasts.
    args = [
        "grow",
        "--dataset",
        "breast_cancer",
        "--batch-size",
        "32",
        "--epochs",
        "3",
        "--iterations",
        "3",
        "--schedule",
        "async",
        "--nproc-per-node",
        "2",
        "--set",
        "adanet.mixture_epochs=3",
        "--set",
        "adanet.widths=[16]",
    ]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_nas(*args, "--out", str(whole)).returncode == 0
    fault = {FAULT_ENV: "28", "NASFORGE_FAULT_RANK": "1"}
    assert run_nas(*args, "--out", str(killed), env=fault).returncode != 0
    resumed = run_nas("grow", "--out", str(killed), "--resume", "--nproc-per-node", "2")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    first = int(re.search(r"epochs (\d+)\.\.12", resumed.stderr).group(1))
    assert 4 < first <= 8  # it resumed inside iteration 2, not from the start
    for name in ("metrics.jsonl", "candidates.jsonl"):
        assert jsonl_rows(whole, name) == jsonl_rows(killed, name)
    assert (whole / "ensemble.json").read_text() == (killed / "ensemble.json").read_text()


def test_grow_user_errors_are_one_line(tmp_path, capsys) -> None:
    assert main(["grow", "--dataset", "csv", "--out", str(tmp_path / "a")]) == 2
    assert "--dataset csv needs --data-file FILE and --target COLUMN" in capsys.readouterr().err
    assert main(["grow", "--target", "y", "--out", str(tmp_path / "b")]) == 2
    assert "data.target does nothing here" in capsys.readouterr().err
    assert main(["grow", "--generator", "gbm", "--out", str(tmp_path / "c")]) == 2
    assert "unknown subnetwork generator 'gbm'; choose one of: cnn, mlp" in capsys.readouterr().err
    async_unset = ["grow", "--schedule", "async", "--set", "run.epochs=null", "--print-config"]
    assert main(async_unset) == 2
    assert "run.epochs must be at least 1" in capsys.readouterr().err


def test_async_plan_balances_shares_and_fills_slack_with_forecasts() -> None:
    assert [num_shares(w, k) for w, k in [(2, 2), (4, 3), (1, 5), (6, 4), (2, 1)]] == [
        2,
        2,
        1,
        3,
        1,
    ]
    assert assign([5.0, 1.0, 3.0], 2) == [0, 1, 1]  # longest first, to the least loaded share
    # share 0 is busy 4 x 10 = 40, share 1 only 4 x 4 = 16: 24 of slack for forecasts of cost 5,
    # one step at a time to the one with the fewest steps so far (f has a head start of 1)
    regular = [("a", 10.0, 4, 0), ("b", 4.0, 4, 1), ("done", 3.0, 0, 1)]
    plan = plan_round(regular, [("f", 5.0, 1, 100), ("g", 5.0, 0, 100)], shares=2)
    assert plan.work == [[("a", 4)], [("b", 4), ("f", 2), ("g", 2)]]
    assert (plan.forecast_steps, plan.owner("f"), plan.owner("g"), plan.owner("done")) == (
        4,
        1,
        1,
        None,
    )
    capped = plan_round(regular, [("f", 5.0, 0, 1), ("g", 9.0, 0, 9)], shares=2)
    assert capped.work[1] == [("b", 4), ("f", 1), ("g", 2)]  # f may take one step only
    assert plan_round(regular[:1], [("f", 1.0, 0, 9)], shares=1).forecast_steps == 0  # no slack
    # Both shares have slack: a forecast candidate stays on the share of its first step.
    spread = plan_round(
        [("a", 1.0, 1, 0), ("b", 1.0, 1, 1), ("c", 10.0, 1, 2)],
        [("f", 2.0, 0, 9), ("g", 2.0, 0, 9)],
        shares=3,
    )
    assert spread.work[0][1:] == [("f", 4)] and spread.work[1][1:] == [("g", 4)]


@pytest.mark.slow
@pytest.mark.distributed
def test_async_schedule_on_two_processes_grows_the_sync_ensemble(tmp_path) -> None:
    args = [
        *SMALL,
        "--dataset",
        "digits",
        "--epochs",
        "3",
        "--set",
        "adanet.widths=[128]",
        "--nproc-per-node",
        "2",
    ]
    runs = {}
    for schedule in ("sync", "async"):
        run = tmp_path / schedule
        result = run_nas(*args, "--schedule", schedule, "--out", str(run))
        assert result.returncode == 0, result.stderr[-3000:]
        runs[schedule] = (load_ensemble(run)[1], jsonl_rows(run)[-1])
    (sync, sync_end), (grown, end) = runs["sync"], runs["async"]
    # Candidates are functions of their seed and steps, not of where they ran: the same
    # ensemble up to float summation order (1 process x 2B instead of 2 x B per step).
    assert [m["architecture"] for m in grown["members"]] == [
        m["architecture"] for m in sync["members"]
    ]
    assert end["test_acc"] == pytest.approx(sync_end["test_acc"], abs=0.02)
    assert end["leader_guesses"] == 1 and end["forecast_steps"] > 0  # shares had slack
    assert sync_end["forecast_steps"] == 0
    assert 0 <= end["forecast_steps_adopted"] <= end["forecast_steps"]
