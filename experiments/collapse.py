"""Collapse: does a long DARTS search collapse, do the indicators see it coming, and what does each
guard do to the test accuracy of the network trained from the genotype?

Rows, each `nas search` with the diagnostics on (the eigenvalue every --hessian-every epochs),
then `nas train` of the genotype the search wrote, with one final-training budget for all:
  plain       DARTS order 1, no guard
  cap         --set collapse.max_skips=2                 (P-DARTS; the cap changes only how the
              genotype is derived, so this row derives it, as the search would, from the
              final alphas of the plain row's search of the same seed)
  stop_ops    --set collapse.early_stop=param_free       (DARTS+)
  stop_eigen  --set collapse.early_stop=eigenvalue       (R-DARTS; windows of 3 epochs, as
              the search is 10 epochs long where R-DARTS's k=5 served 50)
  noise       --set strategy.alpha_noise=0.03            (SDARTS-RS)
Every row runs for every seed k (`--seed k` for the search and the training). The accuracy is the
test accuracy at the best validation epoch of `nas train` (its best.pt): the test split chooses
nothing. Every finished run writes OUT/<row>/seed<k>.json (accuracy, parameters, the epoch the
search stopped at, the per-epoch indicators, the genotype, the commands, wall times) and is
skipped when the script runs again.

    python experiments/collapse.py                         # every row and seed
    python experiments/collapse.py --rows plain --seeds 0  # one run
    python experiments/collapse.py --table                 # the table and the indicators
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from search_quality import run_nas, save_record, selected

GUARDS = {
    "plain": ("DARTS order 1, no guard", []),
    "cap": ("skip cap M=2 (P-DARTS)", ["--set", "collapse.max_skips=2"]),
    "stop_ops": (
        "early stop, parameter-free ops (DARTS+)",
        ["--set", "collapse.early_stop=param_free"],
    ),
    "stop_eigen": (
        "early stop, eigenvalue (R-DARTS, k=3 epochs)",
        ["--set", "collapse.early_stop=eigenvalue", "--set", "collapse.eigenvalue_epochs=3"],
    ),
    "noise": ("op-weight noise 0.03 (SDARTS-RS)", ["--set", "strategy.alpha_noise=0.03"]),
}
INDICATORS = ("param_free_normal", "skips_normal", "entropy_normal", "hessian_eigenvalue")


@dataclass(frozen=True)
class Budget:
    """What every run gets (the script's options of the same names)."""

    dataset: str = "digits"
    space: str = "rdarts_s3"
    search_epochs: int = 10
    layers: int = 5
    channels: int = 8
    batch_size: int = 64
    alpha_lr: float = 3e-4
    train_portion: float = 0.5
    hessian_every: int = 1
    hessian_samples: int = 32
    # The final training of nas/configs/train_digits.yaml, for 20 epochs.
    train_epochs: int = 20
    train_layers: int = 8
    train_channels: int = 16
    train_batch_size: int = 64

    def header(self) -> str:
        return (
            f"{self.dataset}, space {self.space}; search {self.search_epochs} epochs, "
            f"{self.layers} cells, C={self.channels}, batch {self.batch_size}, alpha lr "
            f"{self.alpha_lr:g}, {self.train_portion:g} of the training split for the weights, "
            "eigenvalue every "
            f"{self.hessian_every} epoch(s) on {self.hessian_samples} validation samples; final "
            f"training {self.train_epochs} epochs, {self.train_layers} cells, "
            f"C={self.train_channels}, batch {self.train_batch_size}"
        )


def run_one(budget: Budget, row: str, seed: int, runs: Path) -> dict:
    """Search with the row's guard and train its genotype; the result record."""
    folder = runs / row / f"seed{seed}"
    if folder.exists():  # an interrupted run: start it again
        shutil.rmtree(folder)
    common = ["--dataset", budget.dataset, "--seed", str(seed)]
    if row == "cap":
        # The cap changes only how the genotype is derived, not the search: its search is the
        # plain row's, so its genotype is derived from the plain search's final alphas.
        derive_capped(runs / "plain" / f"seed{seed}" / "search", folder / "search")
        search, search_s = ["search", "(the plain row's search)", *GUARDS[row][1]], None
    else:
        search = search_command(budget, row, seed, folder / "search")
        search_s = run_nas(search)
    train = ["train", "--genotype", str(folder / "search"), *common]
    train += ["--layers", str(budget.train_layers), "--channels", str(budget.train_channels)]
    train += ["--batch-size", str(budget.train_batch_size)]
    train += ["--epochs", str(budget.train_epochs), "--out", str(folder / "train")]
    train_s = run_nas(train)
    metrics = [json.loads(line) for line in (folder / "search" / "metrics.jsonl").open()]
    genotype = json.loads((folder / "search" / "genotype.json").read_text())
    return {
        "row": row,
        "seed": seed,
        "budget": asdict(budget),
        **selected(folder / "train"),
        "search_epochs_run": len(metrics),
        "kept_epoch": kept_epoch(folder / "search"),
        "indicators": [{k: m.get(k) for k in ("epoch", *INDICATORS)} for m in metrics],
        "epoch_seconds": [m["epoch_seconds"] for m in metrics],
        "hessian_seconds": [m["hessian_seconds"] for m in metrics if "hessian_seconds" in m],
        "search_seconds": search_s,
        "train_seconds": train_s,
        "genotype": genotype,
        "commands": ["nas " + " ".join(command) for command in (search, train)],
    }


def search_command(budget: Budget, row: str, seed: int, out: Path) -> list[str]:
    """The `nas search` arguments of a row's search."""
    search = ["search", "--strategy", "darts", "--order", "1", "--space", budget.space]
    search += ["--layers", str(budget.layers), "--channels", str(budget.channels)]
    search += ["--dataset", budget.dataset, "--seed", str(seed)]
    search += ["--batch-size", str(budget.batch_size)]
    search += ["--set", f"strategy.alpha_lr={budget.alpha_lr}"]
    search += ["--set", f"data.train_portion={budget.train_portion}"]
    search += ["--epochs", str(budget.search_epochs), "--out", str(out)]
    search += ["--set", f"collapse.hessian_every={budget.hessian_every}"]
    search += ["--set", f"collapse.hessian_samples={budget.hessian_samples}", *GUARDS[row][1]]
    return search


def derive_capped(plain: Path, out: Path, max_skips: int = 2) -> None:
    """Copy the plain search's run folder `plain` to `out` and derive its genotype.json again from
    the final alphas with at most `max_skips` skips in the normal cell, as
    SearchNetwork.genotype() does with collapse.max_skips set."""
    import torch.nn.functional as F

    from nas.genotype import CELL_KINDS, Genotype, derive_genotype
    from nas.runtime.checkpoint import load_checkpoint
    from nas.spaces import get_space

    if not (plain / "checkpoints" / "last.pt").is_file():
        raise RuntimeError(f"the cap row derives from the plain row's search {plain}: run it first")
    shutil.copytree(plain, out)
    network = load_checkpoint(out / "checkpoints" / "last.pt", restore_rng=False)["task"]["network"]
    if any(bool((network[f"pruned_{kind}"] >= 0).any()) for kind in CELL_KINDS):
        raise RuntimeError("the cap row expects a search that prunes no op (DARTS)")
    scores = [F.softmax(network[f"alpha_{kind}"].double(), dim=-1) for kind in CELL_KINDS]
    searched = Genotype.load(out / "genotype.json")
    capped = derive_genotype(get_space(searched.space), scores, max_skips)
    replace(capped, search=searched.search).save(out / "genotype.json")


def kept_epoch(run: Path) -> int:
    """The epoch whose genotype the search wrote: the last one, or the one an early stop kept."""
    from nas.runtime.checkpoint import load_checkpoint

    state = load_checkpoint(run / "checkpoints" / "last.pt", restore_rng=False)
    kept = state["task"]["collapse"]["kept_epoch"]
    return kept if kept is not None else state["epoch"]


def load(path: Path, budget: Budget) -> dict | None:
    """The record at `path` (None if absent); refuses one made with another budget."""
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if Budget(**record["budget"]) != budget:
        sys.exit(f"collapse: {path} was made with another budget; pass the same options")
    return record


def _ops(genotype: dict) -> str:
    ops = [edge["op"] for node in genotype["normal"]["nodes"] for edge in node]
    free = sum(op in ("skip_connect", "max_pool_3x3", "avg_pool_3x3") for op in ops)
    return f"{free}/{len(ops)} ({ops.count('skip_connect')} skips)"


def _seconds(times: list[float | None]) -> str:
    """The mean of the times that were measured ("plain's" for the cap row)."""
    measured = [t for t in times if t is not None]
    return f"{statistics.mean(measured):.0f} s" if measured else "plain's"


def _point(indicators: dict) -> str:
    eigenvalue = indicators["hessian_eigenvalue"]
    text = f"{indicators['epoch']}: {indicators['param_free_normal']}"
    return text if eigenvalue is None else f"{text} / {eigenvalue:.3g}"


def table(out: Path, seeds: list[int], budget: Budget) -> str:
    """The Markdown table, then each run's indicators by epoch."""
    lines = [
        f"Budget: {budget.header()}. Test accuracy (%) at the best validation epoch of the "
        "final training, mean ± std over the seeds that exist.",
        "",
        "| row | test accuracy | parameter-free ops of the normal cell, per seed | search "
        "epochs run (kept) | search time | eigenvalue cost, share of the epoch |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    details = []
    for row, (label, _) in GUARDS.items():
        found = [load(out / row / f"seed{seed}.json", budget) for seed in seeds]
        records = [r for r in found if r is not None]
        if not records:
            lines.append(f"| {label} | - | - | - | - | - |")
            continue
        accs = [100 * r["test_acc"] for r in records]
        spread = f" ± {statistics.stdev(accs):.1f}" if len(accs) > 1 else ""
        share = [
            statistics.mean(r["hessian_seconds"]) / statistics.mean(r["epoch_seconds"])
            for r in records
            if r["hessian_seconds"]
        ]
        cells = [
            f"{statistics.mean(accs):.1f}{spread} (n={len(accs)})",
            ", ".join(_ops(r["genotype"]) for r in records),
            ", ".join(f"{r['search_epochs_run']} ({r['kept_epoch']})" for r in records),
            _seconds([r["search_seconds"] for r in records]),
            f"{100 * statistics.mean(share):.0f}%" if share else "-",
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        for r in records:
            trace = "; ".join(_point(i) for i in r["indicators"])
            details.append(
                f"- {row}, seed {r['seed']} (epoch: parameter-free ops / eigenvalue): {trace}"
            )
    return "\n".join([*lines, "", *details]) + "\n"


def plot(out: Path, seeds: list[int], budget: Budget, path: Path) -> None:
    """The indicators by epoch, one line per run: parameter-free ops of the normal cell, the
    eigenvalue, the op weights' entropy. Needs matplotlib (the `plot` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("param_free_normal", "hessian_eigenvalue", "entropy_normal")
    titles = (
        "parameter-free ops, normal cell (of 8)",
        "Hessian's largest eigenvalue",
        "op-weight entropy, normal cell (nats)",
    )
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for colour, row in zip(colours, GUARDS):
        if row == "cap":  # the plain row's search: its indicators are the plain row's
            continue
        for seed, style in zip(seeds, ("-", "--", ":")):
            record = load(out / row / f"seed{seed}.json", budget)
            if record is None:
                continue
            for axis, key in zip(axes, keys):
                points = [(i["epoch"], i[key]) for i in record["indicators"] if i[key] is not None]
                if points:
                    label = f"{row}, seed {seed}" if axis is axes[0] else None
                    axis.plot(*zip(*points), style, color=colour, marker=".", label=label)
    for axis, title in zip(axes, titles):
        axis.set_title(title, fontsize=11)
        axis.set_xlabel("search epoch")
        axis.grid(alpha=0.3)
        axis.ticklabel_format(axis="y", useOffset=False)
    axes[0].legend(fontsize=7, ncol=2)
    figure.suptitle(budget.header(), fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default=",".join(GUARDS), help=",".join(GUARDS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=Path("experiments/collapse"))
    parser.add_argument("--runs", type=Path, default=Path("runs/collapse"))
    parser.add_argument("--table", action="store_true", help="only print the table")
    parser.add_argument("--plot", type=Path, help="also draw the indicators into this PNG")
    for field, value in asdict(Budget()).items():
        flag = "--" + field.replace("_", "-")
        parser.add_argument(flag, type=type(value), default=value, help=f"default {value}")
    args = parser.parse_args(argv)
    budget = Budget(**{field: getattr(args, field) for field in asdict(Budget())})
    seeds = [int(seed) for seed in args.seeds.split(",") if seed]
    rows = [row for row in args.rows.split(",") if row]
    unknown = [row for row in rows if row not in GUARDS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(GUARDS)}")
    failed = []
    for row in [] if args.table else rows:
        for seed in seeds:
            path = args.out / row / f"seed{seed}.json"
            if load(path, budget) is not None:
                continue
            try:
                record = run_one(budget, row, seed, args.runs)
            except RuntimeError as err:
                print(f"failed: {err}", file=sys.stderr)
                failed.append(str(path))
                continue
            save_record(path, record)
    print(table(args.out, seeds, budget))
    if args.plot is not None:
        plot(args.out, seeds, budget, args.plot)
    if failed:
        print("failed runs (rerun to retry): " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
