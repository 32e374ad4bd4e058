"""The one exception type for errors a user can cause and fix, and helpers for its messages."""

from __future__ import annotations

import re
from typing import Any

# Longest echo of a user's value in a message; a 100000-character name must not flood a terminal.
ECHO_LIMIT = 60
# Longest message: the head says what is wrong, the tail what to do, so both are kept.
MESSAGE_LIMIT = 580


class NasError(Exception):
    """A user-fixable error: bad config, bad genotype, missing dataset, incompatible flags.

    The CLI prints the message on one line without a traceback and exits with status 2. The message
    says what went wrong and what to do about it. Line breaks become spaces, and an overlong message
    keeps its head and tail.
    """

    def __init__(self, message: str) -> None:
        message = " ".join(str(message).splitlines())
        if len(message) > MESSAGE_LIMIT:
            half = (MESSAGE_LIMIT - 5) // 2
            message = f"{message[:half]} ... {message[-half:]}"
        super().__init__(message)


def shorten(value: Any, limit: int = ECHO_LIMIT) -> str:
    """`repr(value)`, cut to about `limit` characters with the full length said.

    Integers too long to print (Python refuses above 4300 digits) are described by their size.
    """
    try:
        text = repr(value)
    except ValueError:  # int-to-str digit limit
        return f"<an integer of about {int(value.bit_length() * 0.30103)} digits>"
    return clip(text, limit)


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """`text` cut to about `limit` characters, with the full length said."""
    if len(text) <= limit:
        return text
    return f"{text[: max(limit - 20, 10)]}...<{len(text)} characters>"


# "you tried to allocate 123 bytes" (CPU allocator), "Tried to allocate 2.00 GiB" (CUDA caching
# allocator).
_ALLOCATION = re.compile(r"tried to allocate ([0-9.]+ ?[KMGT]?i?B|[0-9]+ bytes)", re.IGNORECASE)
_OOM_TEXT = ("out of memory", "not enough memory", "can't allocate memory")


def out_of_memory_message(err: BaseException, command: str | None) -> str | None:
    """The one-line message for `err` if it is an out-of-memory failure, else None."""
    text = str(err)
    if not (isinstance(err, MemoryError) or any(phrase in text.lower() for phrase in _OOM_TEXT)):
        return None
    found = _ALLOCATION.search(text)
    size = f" (it tried to allocate {_readable(found.group(1))})" if found else ""
    settings = "--batch-size, --channels or --layers"
    if command == "search":
        settings += (
            ", or see fewer channels per op (--set model.partial_channels=4) or recompute "
            "activations (--set model.checkpoint_cells=true)"
        )
    elif command == "grow":
        settings = "--batch-size, adanet.widths or adanet.cnn_channels (--set ...)"
    return f"the run ran out of memory{size}; lower {settings}"


def _readable(size: str) -> str:
    if not size.endswith(" bytes"):
        return size
    count = float(size.split()[0])
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{count:.0f} B"
        count /= 1024
    return size
