"""Two processes (gloo, CPU): ranks stay identical, and 2 x batch B equals 1 x batch 2B."""

import json
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from nas.config import StrategyConfig
from nas.data import loader
from nas.runtime.dist import Runtime
from nas.strategies import STRATEGIES
from tests.conftest import TINY_DATA, assert_refused, run_nas, tiny_network

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _without_batchnorm(module: nn.Module) -> None:
    """Replace every BatchNorm by Identity, so samples of a batch do not interact."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        else:
            _without_batchnorm(child)


def _batches(steps: int, size: int) -> list:
    generator = torch.Generator().manual_seed(123)
    return [
        tuple(
            (
                torch.randn(size, 1, 8, 8, generator=generator),
                torch.randint(0, 3, (size,), generator=generator),
            )
            for _ in range(2)
        )
        for _ in range(steps)
    ]


def _search(
    rank: int,
    world: int,
    name: str,
    order: int | None,
    batchnorm: bool,
    steps: int,
    select: bool = False,
) -> dict:
    """Run `steps` steps of strategy `name` (of `order`, None: its default options) on this
    rank's share of fixed global batches; with `select`, then `Strategy.select` on a fixed
    validation batch, and return random search's pool scores too."""
    torch.manual_seed(rank)  # different on each rank: the broadcast at start must fix it
    net = tiny_network()
    if not batchnorm:
        _without_batchnorm(net)
    runtime = Runtime(rank=rank, world_size=world, device=torch.device("cpu"))
    settings = {} if order is None else {"order": order}
    config = StrategyConfig(name=name, options=STRATEGIES.options(name)(**settings))
    strategy = STRATEGIES.get(name)(net, config, 2, 3, runtime)
    # DDP broadcast rank 0's weights at wrap time; rank 0 seeded 0 like the 1-process run.
    for train, val in _batches(steps, 8):
        share = [(x[rank::world], y[rank::world]) for x, y in (train, val)]
        strategy.step(*share)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    if select:
        ((images, labels),) = [pair[0] for pair in _batches(1, 64)]
        images, labels = images[rank::world], labels[rank::world]

        @torch.no_grad()
        def val_accuracy() -> float:  # as the search task computes it: counts summed over ranks
            net.eval()
            (correct,) = runtime.sum([(net(images).argmax(dim=1) == labels).sum().item()])
            return correct / 64

        strategy.select(val_accuracy)
        state["pool_scores"] = torch.tensor(strategy.scores)
    return state


def _worker(rank: int, world: int, port: int, out: str, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save(_search(rank, world, *args), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def _two_processes(tmp_path, *args) -> list[dict]:
    out = str(tmp_path / "state")
    mp.spawn(_worker, args=(2, _free_port(), out, args), nprocs=2, join=True)
    return [torch.load(f"{out}.{rank}", weights_only=True) for rank in range(2)]


# Every registered strategy with its default options, and the second-order steps.
DDP_CASES = [(name, None) for name in STRATEGIES.names()] + [("darts", 2), ("asap", 2)]


@pytest.mark.distributed
@pytest.mark.parametrize(("name", "order"), DDP_CASES)
def test_ranks_hold_bit_identical_alphas_and_weights(tmp_path, name: str, order) -> None:
    rank0, rank1 = _two_processes(tmp_path, name, order, True, 5)
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    torch.manual_seed(0)  # rank 0's initial network, which the DDP wrap broadcast
    initial = tiny_network().state_dict()
    changed = [key for key in initial if key in rank0 and not torch.equal(initial[key], rank0[key])]
    assert changed, "nothing trained"
    if name == "asap":  # pruning happened, identically on both ranks
        assert (rank0["pruned_normal"] >= 0).any()


@pytest.mark.parametrize("order", [1, 2])
def test_two_processes_match_one_process_of_the_same_global_batch(tmp_path, order: int) -> None:
    # Without BatchNorm, batch statistics do not couple the ranks: 2 ranks x 4 images must train
    # exactly like 1 process x 8 images, up to float summation order.
    torch.manual_seed(0)
    single = _search(0, 1, "darts", order, False, 5)
    rank0, rank1 = _two_processes(tmp_path, "darts", order, False, 5)
    for key, value in single.items():
        assert torch.equal(rank0[key], rank1[key]), key
        assert torch.allclose(rank0[key], value, rtol=1e-4, atol=1e-6), key
    assert not torch.allclose(single["alpha_normal"], tiny_network().alpha_normal)  # it trained


def test_random_ws_on_two_processes_trains_and_ranks_as_one_process(tmp_path) -> None:
    # 2 epochs of 3 steps: the shared training ends, then the pool is ranked on validation.
    torch.manual_seed(0)
    single = _search(0, 1, "random_ws", None, False, 6, True)
    rank0, rank1 = _two_processes(tmp_path, "random_ws", None, False, 6, True)
    for key, value in single.items():
        assert torch.equal(rank0[key], rank1[key]), key
        assert torch.allclose(rank0[key], value, rtol=1e-4, atol=1e-6), key
    assert len(set(single["pool_scores"].tolist())) > 1  # the ranking tells members apart


def test_shards_of_a_step_make_the_one_process_batch() -> None:
    data = torch.utils.data.TensorDataset(torch.arange(103).float(), torch.zeros(103))
    whole = [x for x, _ in loader(data, 8, True, seed=5, epoch=3)]
    parts = [[x for x, _ in loader(data, 4, True, 5, 3, shard=(r, 2))] for r in range(2)]
    assert len(parts[0]) == len(parts[1]) == 103 // 2 // 4
    for step, batch in enumerate(whole[: len(parts[0])]):
        together = torch.cat([parts[0][step], parts[1][step]])
        assert sorted(together.tolist()) == sorted(batch.tolist())
    evaluated = [x for r in range(2) for x, _ in loader(data, 8, False, 0, 0, shard=(r, 2))]
    assert sorted(torch.cat(evaluated).tolist()) == list(range(103))


# A search on two processes, 4 steps per epoch per rank (64 search-training samples, batch 8).
RESTART_ARGS = [
    "search",
    "--nproc-per-node",
    "2",
    *TINY_DATA,
    "--space",
    "tiny",
    "--layers",
    "3",
    "--channels",
    "4",
    "--batch-size",
    "8",
    "--epochs",
    "3",
    "--seed",
    "7",
]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> tuple:
    """The RESTART_ARGS search, uninterrupted: (its folder's parent, the finished process)."""
    parent = tmp_path_factory.mktemp("two")
    result = run_nas(*RESTART_ARGS, "--out", str(parent / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    return parent, result


def test_nproc_per_node_2_search_writes_one_run_directory(two_process_run) -> None:
    parent, result = two_process_run
    run = parent / "run"
    assert "world_size: 2" in (run / "config.yaml").read_text()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]  # written once, by rank 0
    assert result.stdout.count("genotype:") == 1
    assert sorted(p.name for p in parent.iterdir()) == ["run"]
    event_files = list((run / "tb").rglob("events.out.tfevents.*"))
    assert len({path.parent for path in event_files}) == len(event_files)  # rank 0's only
    # Resuming on another number of processes would change the global batch: refused.
    resume = ("search", "--out", str(run), "--resume")
    assert_refused(*resume, cwd=parent, contains="resume it with --nproc-per-node 2")


def _final_state(run) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["task"]["network"]


def test_a_killed_worker_is_restarted_and_resumes_to_the_same_end(tmp_path, two_process_run):
    whole, faulty = two_process_run[0] / "run", tmp_path / "faulty"
    # 4 steps per epoch per rank: rank 1 dies (SIGKILL) at step 6, in epoch 2.
    fault = {"NASFORGE_FAULT_STEP": "6", "NASFORGE_FAULT_RANK": "1"}
    result = run_nas(*RESTART_ARGS, "--max-restarts", "1", "--out", str(faulty), env=fault)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "exitcode: -9" in result.stderr and "epochs 2..3" in result.stderr  # it resumed
    assert (whole / "genotype.json").read_text() == (faulty / "genotype.json").read_text()
    a, b = _final_state(whole), _final_state(faulty)
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_a_rank_that_raises_stops_every_rank_with_the_error(tmp_path) -> None:
    fault = {"NASFORGE_FAULT_STEP": "5", "NASFORGE_FAULT_RANK": "1", "NASFORGE_FAULT_KIND": "raise"}
    result = run_nas(*RESTART_ARGS, "--out", str(tmp_path / "run"), env=fault)  # timeout: 600 s
    assert result.returncode != 0
    assert "injected fault at step 5" in result.stderr


def _shutdown_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    runtime = Runtime(rank=rank, world_size=world, device=torch.device("cpu"))
    with runtime.until_done():  # as the CLI runs a command
        share = runtime.split(2)  # a group per process, as AdaNet's async schedule makes
        share.average([torch.ones(3)])
        if rank == 0:  # rank 0 is still writing the run's outputs when rank 1 is done
            time.sleep(1.0)
            with open(f"{out}.outputs", "w") as f:
                f.write("written")
    seen = os.path.exists(f"{out}.outputs")
    with open(f"{out}.{rank}", "w") as f:
        json.dump({"outputs_seen": seen, "initialized": dist.is_initialized()}, f)


def test_shutdown_waits_for_every_rank_and_destroys_every_group(tmp_path) -> None:
    # Without the barrier rank 1 would leave (and exit) while rank 0 still writes; a rank
    # that dies then makes torchrun stop the others mid-write.
    out = str(tmp_path / "rank")
    mp.spawn(_shutdown_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    for rank in range(2):
        seen = json.loads(Path(f"{out}.{rank}").read_text())
        assert seen == {"outputs_seen": True, "initialized": False}, rank
