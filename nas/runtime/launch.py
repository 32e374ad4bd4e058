"""Start a command on several processes through torch's own launcher (torch.distributed.run).

`nas search|train --nproc-per-node N [--nnodes M --node-rank R --rdzv-endpoint HOST:PORT]
[--max-restarts K] ...` re-runs the same command line as
`python -m torch.distributed.run ... -m nas ...`. Each worker then finds RANK, WORLD_SIZE and
LOCAL_RANK in its environment (see `init_runtime`). Running `torchrun ... -m nas ...` directly is
the same thing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence

from nas.errors import NasError

# Set by the launcher: the time part of the default run directory name, the same in every worker.
RUN_STAMP_ENV = "NASFORGE_RUN_STAMP"

# argparse dest -> torch.distributed.run flag
LAUNCHER_FLAGS = {
    "nproc_per_node": "--nproc-per-node",
    "nnodes": "--nnodes",
    "node_rank": "--node-rank",
    "rdzv_endpoint": "--rdzv-endpoint",
    "max_restarts": "--max-restarts",
}


def wants_launch(nproc_per_node: int | None, nnodes: int | None) -> bool:
    """True when the command asks for several processes and is not already one of them."""
    several = (nproc_per_node or 1) > 1 or (nnodes or 1) > 1
    return several and "WORLD_SIZE" not in os.environ


def launch(argv: Sequence[str], options: dict[str, object]) -> int:
    """Run `nas ARGV` under torch.distributed.run; its exit status.

    `options` maps LAUNCHER_FLAGS keys to values (None: not given). A single node without a
    rendezvous endpoint uses `--standalone` (a free local port).
    """
    if (options.get("nnodes") or 1) > 1 and not options.get("rdzv_endpoint"):
        raise NasError(
            "--nnodes above 1 needs --rdzv-endpoint HOST:PORT (the same on every node) and "
            "--node-rank"
        )
    command = [sys.executable, "-m", "torch.distributed.run"]
    if not options.get("rdzv_endpoint"):
        command.append("--standalone")
    for key, flag in LAUNCHER_FLAGS.items():
        value = options.get(key)
        if value is not None:
            command += [flag, str(value)]
    # The workers get the whole command line: they find WORLD_SIZE set, so the launcher flags
    # in it start nothing (and config.yaml records the command as the user typed it).
    command += ["-m", "nas", *argv]
    env = {**os.environ, RUN_STAMP_ENV: time.strftime("%Y%m%d-%H%M%S")}
    try:
        return subprocess.run(command, check=False, env=env).returncode
    except KeyboardInterrupt:
        return 130
