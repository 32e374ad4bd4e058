"""Reading YAML a user wrote: safe tags only, no aliases, bounded nesting, UTF-8, one-line errors.

A configuration needs none of YAML's anchors and aliases, and refusing them is what keeps an alias
bomb ("billion laughs": each level repeats the one below ten times) from expanding for ever.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nas.errors import NasError, clip, shorten

# Deepest nesting a YAML document may have; a configuration is three levels deep. The composer
# recurses once per level, so thousands of levels would end in a RecursionError.
MAX_DEPTH = 32


class _Refusal(yaml.MarkedYAMLError):
    """A document this loader refuses (alias or too deep); the mark says where."""


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader (plain data only: a `!!python/...` tag never runs) without aliases and
    with bounded nesting."""

    _depth = 0

    def fetch_flow_collection_start(self, token_class: Any) -> None:
        # Checked while scanning: the scanner re-examines every open bracket per token, so
        # thousands of them take minutes before the composer sees the first.
        if self.flow_level >= MAX_DEPTH:
            raise _Refusal(
                problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=self.get_mark()
            )
        super().fetch_flow_collection_start(token_class)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refusal(
                problem="anchors and aliases (&name, *name) are not supported; write values out",
                problem_mark=event.start_mark,
            )
        if self._depth >= MAX_DEPTH:
            raise _Refusal(
                problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=event.start_mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def parse_yaml(text: str) -> Any:
    """The data of one YAML document. Raises yaml.YAMLError, or ValueError for a number too long
    to convert."""
    loader = _ConfigLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML file of sections (`section: {key: value}`). Raises NasError naming the file if
    it is missing, unreadable, not UTF-8, not valid YAML, or not a mapping of sections.
    """
    where = f"config file {shorten(str(path))}"
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NasError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise NasError(f"{where} is a directory; give a YAML file") from None
    except OSError as err:
        raise NasError(f"{where} cannot be read ({err.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise NasError(
            f"{where} is not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start}); "
            "save it as UTF-8"
        ) from None
    try:
        document = parse_yaml(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = clip(err.problem or err.context or "malformed", 160)
        raise NasError(f"{where}: not valid YAML: {problem}{at}") from None
    except yaml.YAMLError as err:
        raise NasError(f"{where}: not valid YAML ({clip(str(err), 160)})") from None
    except ValueError:
        raise NasError(f"{where}: a number has more than 4300 digits") from None
    if document is None:
        raise NasError(f"{where} is empty; expected sections such as data: and run:")
    if not isinstance(document, dict):
        raise NasError(
            f"{where}: expected a mapping of sections (data:, run:, ...), got a "
            f"{type(document).__name__}"
        )
    for section, values in document.items():
        if not isinstance(values, dict):
            raise NasError(
                f"{where}: section {shorten(section)} must be a mapping of keys to values, got "
                f"{shorten(values)}"
            )
    return document
