"""Search quality: does a searched cell beat random cells, a transferred cell and plain networks?

One Markdown table per dataset (mnist1d, mnist1d_shuffle, digits). Rows:
  - the searches: DARTS order 1 and 2, ASAP, PC-DARTS (K=4), GDAS, random search with weight
    sharing; each is `nas search`, then `nas train` of the genotype it found;
  - random genotypes of the space (`nas sample`, the same ones for every dataset and seed);
  - DARTS_V2 (searched on CIFAR-10), trained here;
  - the plain networks of `nas train --model`: the hand-designed CNN, the MLP, logistic regression.
Each row runs for every seed k, with `--seed k` for the search and the training. Every network gets
the same final-training budget and recipe (`nas train` with the options below, the rest of the
recipe being the data's defaults). The accuracy reported is the test accuracy at the epoch with
the best validation accuracy (the train command's best.pt): the test split never chooses.

Every finished run writes OUT/<dataset>/<row>/seed<k>.json (accuracies, parameters, wall times,
genotype, the exact commands) and is skipped when the script runs again, so it resumes after an
interruption and grows row by row. Run directories go under --runs and are rebuilt from scratch
when a run did not finish.

    python experiments/search_quality.py                        # every dataset, row and seed
    python experiments/search_quality.py --datasets digits --rows darts1,random --seeds 0
    python experiments/search_quality.py --table                # print the tables of what exists

Budgets (defaults below, options of the same names; each table's header states its own). The
defaults are sized so that the digits table (every row, 3 seeds) costs about 45 minutes of one
CPU core. Measured with 3 cells, C=8, batch 64, darts space, one thread (OMP_NUM_THREADS=1), as
CPU seconds of the whole in-process command (load, build, one epoch, evaluation):
                                                        digits     mnist1d
    nas search, DARTS order 1, 1 epoch:            S =  47.8 s     148.4 s  (11 / 31 steps)
    nas train, DARTS_V2, 1 epoch:                  T =   5.7 s       9.9 s
The other searches, relative to DARTS order 1 (estimated, not measured here): order 2 2.2x (the
ratio experiments/README.md measured on digits), ASAP 1x, PC-DARTS 0.5x, GDAS and random WS
0.4x each (one op per edge): 5.5 S per search epoch of all six. The plain networks cost about a
fifth of T. Per seed, with search_epochs E_s = 2 and train_epochs E_t = 5:
    searches   5.5 x E_s x S      digits 526 s    mnist1d 1632 s
    training   15 x E_t x T       digits 428 s    mnist1d  743 s  (6 searched, 8 random, DARTS_V2)
    baselines  3 x E_t x T / 5    digits  17 s    mnist1d   30 s
    3 seeds:                      digits 2913 s (49 min)   mnist1d 7215 s (2 h)
The searches dominate on MNIST-1D (4000 signals: 31 steps per epoch), and even one search epoch
there (816 s per seed) leaves no room in 45 minutes for 3 seeds: its tables take about 2 hours at
these budgets, and mnist1d_shuffle the same. (The machine ran other jobs, load average about 6;
CPU seconds, unlike wall time, stay close to an idle machine's.) Such short searches barely move
the alphas: raise --search-epochs where more time is available.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DATASETS = ("mnist1d", "mnist1d_shuffle", "digits")
SEARCHES = {
    "darts1": ("DARTS, order 1", ["--strategy", "darts", "--order", "1"]),
    "darts2": ("DARTS, order 2", ["--strategy", "darts", "--order", "2"]),
    "asap": ("ASAP", ["--strategy", "asap"]),
    # Xu et al. 2020 use K=4 on CIFAR-10; C/K must stay even (the stride-2 skip halves it).
    "pcdarts": ("PC-DARTS, K=4", ["--strategy", "darts", "--set", "model.partial_channels=4"]),
    "gdas": ("GDAS", ["--strategy", "gdas"]),
    "random_ws": ("random search, weight sharing", ["--strategy", "random_ws"]),
}
# Rows trained without a search: `nas train` arguments. The plain networks (`--model`) have
# their own shape, so --layers and --channels are not theirs.
FIXED = {
    "darts_v2": ("DARTS_V2, transferred", ["--genotype", "DARTS_V2"]),
    "cnn": ("hand-designed CNN", ["--model", "cnn"]),
    "mlp": ("MLP", ["--model", "mlp"]),
    "logistic": ("logistic regression", ["--model", "logistic"]),
}
PLAIN = ("cnn", "mlp", "logistic")
RANDOM = "random"  # the random genotypes' row: its runs are rows random0, random1, ...
ROWS = (*SEARCHES, RANDOM, *FIXED)
RANDOM_GENOTYPE_SEED = 0  # the random genotypes do not depend on the dataset or the run seed


@dataclass(frozen=True)
class Budget:
    """What every run of one table gets (the script's options of the same names)."""

    search_epochs: int = 2
    train_epochs: int = 5
    layers: int = 3
    channels: int = 8
    batch_size: int = 64
    space: str = "darts"
    settings: tuple[str, ...] = ()  # --set KEY=VALUE for every command

    def header(self) -> str:
        extra = "".join(f", --set {s}" for s in self.settings)
        return (
            f"search {self.search_epochs} epochs, final training {self.train_epochs} epochs; "
            f"cell networks of {self.layers} cells, C={self.channels}; batch {self.batch_size}; "
            f"space {self.space}{extra}"
        )


def run_nas(argv: list[str]) -> float:
    """Run `nas ARGV` in this process (one torch import for the whole script); its wall time.

    Raises RuntimeError when the command fails (the message names it)."""
    from nas.cli import main

    print("$ nas " + " ".join(argv), file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the tables only
            status = main(argv)
    except SystemExit as exit_:  # argparse refuses unknown options this way
        status = exit_.code
    if status != 0:
        raise RuntimeError(f"nas {' '.join(argv)} exited with status {status}")
    return time.perf_counter() - started


def random_genotypes(budget: Budget, count: int, out: Path) -> tuple[list[str], list[Path]]:
    """The `nas sample` command of the random genotypes and their files, sampled once into OUT
    (the same for every dataset and seed)."""
    folder = out / "genotypes" / f"{budget.space}-seed{RANDOM_GENOTYPE_SEED}-count{count}"
    sample = ["sample", "--space", budget.space, "--count", str(count)]
    sample += ["--seed", str(RANDOM_GENOTYPE_SEED), "--out", str(folder)]
    paths = sorted(folder.glob("genotype_*.json"))
    if len(paths) < count:  # never sampled, or interrupted
        shutil.rmtree(folder, ignore_errors=True)
        run_nas(sample)
        paths = sorted(folder.glob("genotype_*.json"))
    return sample, paths


def selected(train_dir: Path) -> dict[str, Any]:
    """The accuracies of the run's best.pt (chosen on validation; the test split chooses
    nothing) and its parameter count."""
    from nas.api import load_model
    from nas.models.summary import count_parameters
    from nas.runtime.checkpoint import load_checkpoint

    best = load_checkpoint(train_dir / "checkpoints" / "best.pt", restore_rng=False)
    found = {"epoch": best["epoch"], "val_acc": best.get("val_acc"), "test_acc": best["test_acc"]}
    if found["val_acc"] is None:  # no validation split: the last epoch, never a test choice
        rows = (train_dir / "metrics.jsonl").read_text().splitlines()
        last = json.loads(rows[-1])
        found = {"epoch": last["epoch"], "val_acc": None, "test_acc": last["test_acc"]}
    return {**found, "params": count_parameters(load_model(train_dir, "best"))}


def run_one(
    budget: Budget, dataset: str, row: str, seed: int, out: Path, runs: Path, random_count: int
) -> dict:
    """Search (for a search row) and train one row with one seed; its result record."""
    folder = runs / dataset / row / f"seed{seed}"
    if folder.exists():  # an interrupted run: start it again
        shutil.rmtree(folder)
    common = ["--dataset", dataset, "--batch-size", str(budget.batch_size), "--seed", str(seed)]
    common += [arg for setting in budget.settings for arg in ("--set", setting)]
    cells = ["--layers", str(budget.layers), "--channels", str(budget.channels)]
    commands, search_s = [], None
    if row in SEARCHES:
        search = ["search", *SEARCHES[row][1], "--space", budget.space, *cells, *common]
        search += ["--epochs", str(budget.search_epochs), "--out", str(folder / "search")]
        commands.append(search)
        search_s = run_nas(search)
        model = ["--genotype", str(folder / "search")]
    elif row.startswith(RANDOM):
        sample, paths = random_genotypes(budget, random_count, out)
        commands.append(sample)
        model = ["--genotype", str(paths[int(row[len(RANDOM) :])])]
    else:
        model = FIXED[row][1]
    train = ["train", *model, *([] if row in PLAIN else cells), *common]
    train += ["--epochs", str(budget.train_epochs)]
    train += ["--out", str(folder / "train")]
    commands.append(train)
    train_s = run_nas(train)
    genotype_file = folder / "train" / "genotype.json"
    genotype = json.loads(genotype_file.read_text()) if genotype_file.is_file() else None
    return {
        "dataset": dataset,
        "row": row,
        "seed": seed,
        "budget": asdict(budget),
        **selected(folder / "train"),
        "search_seconds": search_s,
        "train_seconds": train_s,
        "genotype": genotype,
        "commands": ["nas " + " ".join(command) for command in commands],
    }


def result_path(out: Path, dataset: str, row: str, seed: int) -> Path:
    return out / dataset / row / f"seed{seed}.json"


def load_result(path: Path, budget: Budget | None = None) -> dict | None:
    """The record at `path` (None if absent); refuses one made with another budget."""
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    made = Budget(**{**record["budget"], "settings": tuple(record["budget"]["settings"])})
    if budget is not None and made != budget:
        sys.exit(
            f"search_quality: {path} was made with another budget ({made.header()}); "
            "pass the same options, or another --out"
        )
    return record


def expand(row: str, random_count: int) -> list[str]:
    """The run rows of a table row (the random row is one run row per genotype)."""
    return [f"{RANDOM}{i}" for i in range(random_count)] if row == RANDOM else [row]


def _percent(values: list[float]) -> str:
    mean = 100 * statistics.mean(values)
    if len(values) < 2:
        return f"{mean:.1f} (n={len(values)})"
    return f"{mean:.1f} ± {100 * statistics.stdev(values):.1f} (n={len(values)})"


def _seconds(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.mean(known):.0f} s" if known else "n/a"


def _cells(records: list[dict]) -> list[str]:
    """Test accuracy, parameters, search and training wall time of one row's seeds."""
    if not records:
        return ["-", "-", "-", "-"]
    params = statistics.mean(r["params"] for r in records)
    return [
        _percent([r["test_acc"] for r in records]),
        f"{params:,.0f}",
        _seconds([r["search_seconds"] for r in records]),
        _seconds([r["train_seconds"] for r in records]),
    ]


def table(out: Path, dataset: str, seeds: list[int], budget: Budget, random_count: int) -> str:
    """One dataset's Markdown table, from the records under OUT (missing cells: "-")."""
    lines = [
        f"### {dataset}",
        "",
        f"Budget: {budget.header()}. Test accuracy (%) at the best validation epoch: mean ± "
        "std over the n seeds that exist; parameters and wall times are means over those seeds.",
        "",
        "| row | test accuracy | parameters | search time | training time |",
        "| --- | --- | --- | --- | --- |",
    ]

    def records(row: str) -> list[dict]:
        found = [load_result(result_path(out, dataset, row, seed), budget) for seed in seeds]
        return [r for r in found if r is not None]

    for row in ROWS:
        if row != RANDOM:
            label = SEARCHES[row][0] if row in SEARCHES else FIXED[row][0]
            lines.append("| " + " | ".join([label, *_cells(records(row))]) + " |")
            continue
        genotypes = {run_row: records(run_row) for run_row in expand(row, random_count)}
        trained = {name: found for name, found in genotypes.items() if found}
        means = [statistics.mean(r["test_acc"] for r in found) for found in trained.values()]
        label = f"random genotypes: mean of {len(trained)}/{len(genotypes)} seed-means"
        cells = _cells([r for found in trained.values() for r in found])
        if means:  # the spread between genotypes, not between seeds
            cells[0] = _percent(means).replace("(n=", "(genotypes=")
        lines.append("| " + " | ".join([label, *cells]) + " |")
        # Without validation accuracies (the last-epoch stand-in) no genotype is chosen.
        validated = {n: f for n, f in trained.items() if all(r["val_acc"] for r in f)}
        best = max(
            validated,
            key=lambda name: statistics.mean(r["val_acc"] for r in validated[name]),
            default=None,
        )
        label = f"random genotype, best by validation ({best or '-'})"
        lines.append("| " + " | ".join([label, *_cells(trained.get(best, []))]) + " |")
    return "\n".join(lines) + "\n"


def save_record(path: Path, record: dict) -> None:
    """Write `record` as JSON at `path`: whole or not at all (an interrupted write leaves none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(record, indent=1) + "\n")
    partial.replace(path)


def run_missing(args: argparse.Namespace, budget: Budget) -> list[str]:
    """Run every asked-for run that has no record yet, one at a time; the records that failed."""
    failed = []
    rows = [
        run_row
        for row in ROWS
        if row in args.rows
        for run_row in expand(row, args.random_genotypes)
    ]
    for dataset, row, seed in itertools.product(args.datasets, rows, args.seeds):
        path = result_path(args.out, dataset, row, seed)
        if load_result(path, budget) is not None:
            print(f"done: {path}", file=sys.stderr)
            continue
        try:
            record = run_one(budget, dataset, row, seed, args.out, args.runs, args.random_genotypes)
        except RuntimeError as err:
            print(f"failed: {err}", file=sys.stderr)
            failed.append(str(path))
            continue
        save_record(path, record)
    return failed


def _list(text: str) -> list[str]:
    return [item for item in text.split(",") if item]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=_list, default=list(DATASETS))
    parser.add_argument("--rows", type=_list, default=list(ROWS), help=",".join(ROWS))
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in _list(s)], default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("experiments/search_quality"))
    parser.add_argument("--runs", type=Path, default=Path("runs/search_quality"))
    parser.add_argument("--table", action="store_true", help="only print the tables")
    defaults = Budget()
    for field, value in asdict(defaults).items():
        if field != "settings":
            flag = "--" + field.replace("_", "-")
            parser.add_argument(flag, type=type(value), default=value, help=f"default {value}")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--random-genotypes", type=int, default=8, help="default 8")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.rows) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {', '.join(unknown)}; the rows are {', '.join(ROWS)}")
    budget = Budget(
        **{f: getattr(args, f) for f in asdict(defaults) if f != "settings"},
        settings=tuple(args.set),
    )
    failed = [] if args.table else run_missing(args, budget)
    for dataset in args.datasets:
        print(table(args.out, dataset, args.seeds, budget, args.random_genotypes))
    if failed:
        print(f"{len(failed)} runs failed (see above): {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
