"""The optuna side of `nas tune`: storage, sampler, pruner, trial bookkeeping.

optuna is imported here only, and only when a study is opened (the `hpo` extra).
"""

from __future__ import annotations

import itertools
import math
import os
import socket
from pathlib import Path
from typing import Any

from nas.errors import NasError, shorten
from nas.optional import optional_import
from nas.tune.config import ParamSpec, TuneConfig

# Every grid point is a queued trial in the storage: beyond this a study is not practical.
MAX_GRID_POINTS = 100_000
# Trial user attributes: who runs it, why it failed, which trial it retries.
HOST_ATTR, PID_ATTR, ERROR_ATTR, RETRY_ATTR = "host", "pid", "error", "retry_of"


def import_optuna() -> Any:
    """The optuna module. Raises NasError saying how to install it."""
    return optional_import("optuna", "nas tune")


def make_storage(storage: str | None, out: Path) -> tuple[Any, str]:
    """The optuna storage and a description of it.

    None: SQLite in the study directory (one worker). A URL with `://` is an RDB URL
    (postgresql://, mysql://, sqlite:///); anything else is a journal file, which many workers can
    share on a shared file system without SQLite's locking problems.
    """
    optuna = import_optuna()
    if storage is None:
        path = (out / "study.db").resolve()
        return optuna.storages.RDBStorage(f"sqlite:///{path}"), str(out / "study.db")
    check_storage(storage)
    if "://" in storage:
        try:
            return optuna.storages.RDBStorage(storage), storage
        except (ImportError, ModuleNotFoundError) as err:
            raise NasError(f"--storage {storage}: the database driver is missing ({err})") from None
        except Exception as err:  # sqlalchemy raises many kinds for a bad URL or database
            message = (str(err).splitlines() or [type(err).__name__])[0][:200]
            raise NasError(f"--storage {shorten(storage)}: cannot be opened ({message})") from None
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = Path(storage)
    return JournalStorage(JournalFileBackend(str(path))), f"journal file {path}"


def check_storage(storage: str) -> None:
    """Refuse a --storage that cannot hold a study, before anything is written. Raises NasError.

    An RDB URL needs a known database; a journal file needs an existing folder it can be written
    in, and an existing file must already be an optuna journal (so it is never overwritten).
    """
    if "://" in storage:
        scheme = storage.split("://", 1)[0].split("+", 1)[0].lower()
        if scheme not in _DATABASES:
            raise NasError(
                f"--storage {shorten(storage)}: unknown database {shorten(scheme)}; use "
                f"{', '.join(f'{name}://...' for name in _DATABASES)} or a journal file path"
            )
        database = storage.split("://", 1)[1].split("?", 1)[0]
        if scheme == "sqlite" and database.startswith("/") and database[1:] not in ("", ":memory:"):
            _check_folder(Path(database[1:]).parent, storage)  # sqlite:///FILE, sqlite:////ABS
        return
    path = Path(storage)
    _check_folder(path.parent, storage)
    if path.is_dir():
        raise NasError(f"--storage {shorten(storage)} is a folder; give a journal file inside it")
    try:
        if path.exists():
            with path.open("rb") as f:
                first = f.readline(_JOURNAL_LINE)
            with path.open("ab"):  # writable, nothing written
                pass
            if first and not _is_journal_line(first):
                raise NasError(
                    f"--storage {shorten(storage)} is not an optuna journal file; give a new "
                    "file name (it will not be overwritten)"
                )
        else:  # can a file be created next to it? (a temporary one, removed at once)
            import tempfile

            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".nas-probe-"):
                pass
    except OSError as err:
        raise NasError(
            f"--storage {shorten(storage)}: cannot be written ({err.strerror}); choose a "
            "writable path"
        ) from None


_DATABASES = ("sqlite", "postgresql", "mysql", "oracle", "mssql")
_JOURNAL_LINE = 1 << 20  # bytes of the first journal record read to recognise the format


def _check_folder(folder: Path, storage: str) -> None:
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise NasError(
            f"--storage {shorten(storage)}: the folder {shorten(str(folder))} {what}; create it "
            "or choose another path"
        )


def _is_journal_line(line: bytes) -> bool:
    import json

    if not line.endswith(b"\n"):  # another worker may be writing the first record right now
        return line.lstrip().startswith(b'{"op_code"')
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return False
    return isinstance(record, dict) and "op_code" in record


def make_sampler(tune: TuneConfig, seed: int) -> Any:
    """random or TPE, seeded with `seed`; the grid is random sampling of queued points (see
    `enqueue_grid`).
    """
    optuna = import_optuna()
    if tune.sampler in ("random", "grid"):
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: workers running in parallel see each other's running trials as bad, so
    # they do not all sample the same point (optuna's recommendation for distributed TPE).
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def make_pruner(tune: TuneConfig, max_epochs: int | None) -> Any:
    """No pruning, ASHA (asynchronous successive halving, Li et al. 2020) or Hyperband
    (Li et al. 2018); both count epochs as the resource.
    """
    optuna = import_optuna()
    if tune.pruner == "none":
        return optuna.pruners.NopPruner()
    if tune.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=tune.min_epochs, reduction_factor=tune.reduction_factor
        )
    return optuna.pruners.HyperbandPruner(
        min_resource=tune.min_epochs,
        max_resource=max_epochs if max_epochs is not None else "auto",
        reduction_factor=tune.reduction_factor,
    )


def check_grid(specs: dict[str, ParamSpec]) -> int:
    """The number of grid points. Raises NasError when a parameter has no finite set of values
    or the grid is larger than MAX_GRID_POINTS (counted, not enumerated).
    """
    size = math.prod(spec.grid_size() for spec in specs.values())
    if size > MAX_GRID_POINTS:
        sizes = " x ".join(f"{spec.grid_size()} ({key})" for key, spec in specs.items())
        raise NasError(
            f"tune.params: the grid has {sizes[:300]} = {size:.3g} points, more than "
            f"{MAX_GRID_POINTS:,}; give the parameters larger steps or fewer choices, or use the "
            "random or tpe sampler"
        )
    return size


def grid_points(specs: dict[str, ParamSpec], seed: int) -> list[dict[str, Any]]:
    """Every point of the grid, in an order shuffled by `seed`. Raises NasError (check_grid)."""
    import random

    check_grid(specs)
    keys = list(specs)
    points = [
        dict(zip(keys, values))
        for values in itertools.product(*(specs[k].grid_values() for k in keys))
    ]
    random.Random(seed).shuffle(points)
    return points


def enqueue_grid(study: Any, specs: dict[str, ParamSpec], seed: int) -> None:
    """Queue every grid point the study has not seen yet.

    Queued trials instead of optuna's GridSampler: its end-of-grid `study.stop()` only works
    inside `study.optimize`, and a queue is shared by workers and survives a resume.
    """
    for point in grid_points(specs, seed):
        study.enqueue_trial(point, skip_if_exists=True)


def open_study(storage: Any, name: str, direction: str, sampler: Any, pruner: Any) -> Any:
    """Create the study, or load it when it exists (resume, or another worker's)."""
    optuna = import_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # nas tune prints its own lines
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction=direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    if study.direction.name.lower() != direction:
        raise NasError(
            f"study {name!r} in this storage was created to {study.direction.name.lower()} its "
            f"metric, this config asks to {direction}; use another --study name"
        )
    return study


def counted_trials(study: Any) -> list[Any]:
    """The trials that count towards the budget: all but failed ones that were retried."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(RETRY_ATTR) for t in trials}
    states = _states()
    return [
        t
        for t in trials
        if t.state != states.WAITING and not (t.state == states.FAIL and t.number in retried)
    ]


def recover_stale_trials(study: Any) -> list[int]:
    """Trials left RUNNING by a worker of this host that no longer exists (killed): mark them
    failed and queue their parameters again. Returns their numbers.
    """
    states, host, stale = _states(), socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(states.RUNNING,)):
        pid = trial.user_attrs.get(PID_ATTR)
        if trial.user_attrs.get(HOST_ATTR) != host or pid is None or _alive(int(pid)):
            continue
        study.tell(trial.number, state=states.FAIL, skip_if_finished=True)
        retry = {RETRY_ATTR: trial.number}
        study.enqueue_trial(trial.params, user_attrs=retry, skip_if_exists=False)
        stale.append(trial.number)
    return stale


def start_trial(study: Any) -> Any:
    """Ask the study for a trial and record which process runs it."""
    trial = study.ask()
    trial.set_user_attr(HOST_ATTR, socket.gethostname())
    trial.set_user_attr(PID_ATTR, os.getpid())
    return trial


def finish_trial(study: Any, trial: Any, outcome: str, value: float | None, error: str) -> None:
    """Tell the study how a trial ended: complete (with `value`), pruned or failed (`error`)."""
    states = _states()
    if outcome == "complete":
        study.tell(trial, value)
    elif outcome == "pruned":
        study.tell(trial, state=states.PRUNED)
    else:
        trial.set_user_attr(ERROR_ATTR, error[:2000])
        study.tell(trial, state=states.FAIL)


def retry_trial(study: Any, trial: Any) -> None:
    """Fail an interrupted trial and queue its parameters, so the next run redoes it."""
    trial.set_user_attr(ERROR_ATTR, "interrupted")
    study.tell(trial, state=_states().FAIL)
    study.enqueue_trial(trial.params, user_attrs={RETRY_ATTR: trial.number})


def _states() -> Any:
    return import_optuna().trial.TrialState


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
