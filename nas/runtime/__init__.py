"""The only place that knows about processes, devices, checkpoints and the training loop."""

from nas.runtime.checkpoint import load_checkpoint, save_checkpoint
from nas.runtime.dist import Runtime, init_runtime
from nas.runtime.engine import Engine, StepResult, Task

__all__ = [
    "Engine",
    "Runtime",
    "StepResult",
    "Task",
    "init_runtime",
    "load_checkpoint",
    "save_checkpoint",
]
