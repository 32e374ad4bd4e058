"""Plugin-owned options: a strategy, dataset or AdaNet generator declares the settings it reads.

A plugin declares a dataclass of its options beside it, a subclass of `Options` with a default and
a comment per field and its range checks in `checks()`, and registers it with the plugin:

    @dataclass
    class MyOptions(Options):
        # Why this setting exists and what it does (cite the paper).
        temperature: float = 1.0

        def checks(self) -> list[tuple[bool, str]]:
            return [(self.temperature > 0, "strategy.temperature must be positive")]

    @STRATEGIES.register("mine", options=MyOptions)
    class Mine(Strategy): ...  # reads self.options.temperature

The keys stay flat in the plugin's config section (`strategy.temperature=0.5` in `--set` or YAML).
A configuration keeps such keys aside until it knows which plugin the section selects; then
`resolve_options` type-checks them into the selected plugin's options object, `section.options`,
which the plugin receives. A key that the selected plugin or the command does not read is refused
by `does_nothing`, the one place that words that refusal.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from dataclasses import dataclass
from typing import Any

from nas.errors import NasError


@dataclass
class Options:
    """Base class of a plugin's options (a plugin that reads none gets this empty one)."""

    def checks(self) -> list[tuple[bool, str]]:
        """(ok, message) range checks, run when the configuration is validated. Each message
        names its dotted key ("strategy.temperature must be positive")."""
        return []


@dataclass(frozen=True)
class PluginSection:
    """A config section whose keys, beyond its own fields, belong to the plugin it selects."""

    # "module:ATTRIBUTE" of the plugin registry; imported when needed (registries need torch).
    registry: str
    # The section's field that names the plugin ("name" for strategy.name).
    selector: str = "name"

    def load(self) -> Any:
        """The registry (a nas.registry.Registry)."""
        module, _, attribute = self.registry.partition(":")
        return getattr(importlib.import_module(module), attribute)


def option_names(options_class: type) -> list[str]:
    """The keys of an options dataclass, in declaration order."""
    return [f.name for f in dataclasses.fields(options_class)]


def does_nothing(key: str, why: str, fix: str) -> NasError:
    """The refusal of a setting that would silently have no effect: names the key, says why it
    does nothing, and what to do instead."""
    return NasError(f"{key} does nothing here: {why}; {fix}")


def plugin_owners(plugin: PluginSection, name: str) -> list[str]:
    """The registered plugins of `plugin`'s registry whose options have the key `name`."""
    registry = plugin.load()
    return [p for p in registry.names() if name in option_names(registry.options(p))]


def resolve_options(config: Any) -> None:
    """Fill `section.options` of every plugin section of `config` with the selected plugin's
    options and the values set for them. Raises NasError: an unknown plugin, a key of another
    plugin (it would do nothing), an unknown key, a value of the wrong type.
    """
    from nas.config import _coerce, _suggest, all_keys

    pending = config.__dict__.get("_plugin_values", {})
    for section_name, plugin in type(config).plugin_sections.items():
        section = getattr(config, section_name)
        registry = plugin.load()
        name = getattr(section, plugin.selector)
        options_class = registry.options(name)
        options = section.options
        if options is None:
            options = options_class()
        elif type(options) is not options_class:
            raise NasError(
                f"{section_name}.options is a {type(options).__name__}, but {registry.kind} "
                f"{name!r} reads {options_class.__name__}"
            )
        hints = typing.get_type_hints(options_class)
        for key, value in pending.get(section_name, {}).items():
            dotted = f"{section_name}.{key}"
            if key in option_names(options_class):
                setattr(options, key, _coerce(value, hints[key], dotted))
                continue
            owners = plugin_owners(plugin, key)
            if owners:
                kind = registry.kind
                raise does_nothing(
                    dotted,
                    f"it is an option of {kind} {' / '.join(map(repr, owners))} only, and this "
                    f"run uses {kind} {name!r}",
                    f"remove it, or set {section_name}.{plugin.selector}={owners[0]}",
                )
            raise NasError(f"unknown config key {dotted!r}{_suggest(dotted, all_keys(config))}")
        pending.pop(section_name, None)
        section.options = options


def options_checks(config: Any) -> list[tuple[bool, str]]:
    """The range checks of every selected plugin's options (after `resolve_options`)."""
    return [
        check
        for section_name in type(config).plugin_sections
        for check in getattr(config, section_name).options.checks()
    ]


def option_hint(config_class: type, section_name: str, name: str) -> Any:
    """The type of the plugin option `section_name.name` (any plugin's); None if none has it."""
    plugin = config_class.plugin_sections.get(section_name)
    if plugin is None:
        return None
    registry = plugin.load()
    for owner in plugin_owners(plugin, name):
        return typing.get_type_hints(registry.options(owner))[name]
    return None
