"""Plugin manager factory and discovery.

Three channels: the ``bolt_host`` entry-point group (the built-in store
backends are registered there exactly like third-party plugins), loose
``*.py`` files in ``--plugins-dir``, and an explicit list for tests and
embedding.  ``BOLT_PLUGINS`` is an allow-list, ``BOLT_DISABLE_PLUGINS`` a
deny-list; both name plugins by entry-point name or file stem.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import inspect
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from bolt_host import hookspecs
from bolt_host.config import Settings

ENTRY_POINT_GROUP = "bolt_host"


class PluginLoadError(RuntimeError):
    """A plugin could not be loaded or registered; the message names it."""


@dataclass(frozen=True)
class PluginInfo:
    name: str
    version: str | None
    origin: str  # "entry-point", "plugins-dir" or "explicit"
    where: str = ""  # for people: the entry point, the file, or how it was passed

    def described(self) -> str:
        return self.where or self.origin


def make_plugin_manager(settings: Settings, extra: Iterable[object] = ()) -> pluggy.PluginManager:
    """A fresh plugin manager with every allowed plugin registered and checked."""
    pm = pluggy.PluginManager("bolt_host")
    pm.add_hookspecs(hookspecs)
    pm.bolt_info = {}  # type: ignore[attr-defined]
    for name, module, version, value in _entry_point_plugins():
        if _allowed(name, settings):
            where = f"entry point {name!r} ({value}) of group {ENTRY_POINT_GROUP!r}"
            _register(pm, module, name, PluginInfo(name, version, "entry-point", where))
    if settings.plugins_dir:
        for name, module, path in _plugins_dir_modules(settings.plugins_dir):
            if _allowed(name, settings):
                _register(pm, module, name, PluginInfo(name, None, "plugins-dir", f"file {path}"))
    for plugin in extra:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        info = PluginInfo(name, getattr(plugin, "__version__", None), "explicit", "plugin object passed to create_app")
        _register(pm, plugin, name, info)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginLoadError(f"plugin implements an unknown hook: {exc}") from exc
    return pm


def plugin_infos(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """Name, version, origin and implemented hooks of every registered plugin."""
    result = []
    for name, info in sorted(pm.bolt_info.items()):  # type: ignore[attr-defined]
        plugin = pm.get_plugin(name)
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        result.append({"name": name, "version": info.version, "origin": info.origin, "hooks": hooks})
    return result


def discover(settings: Settings) -> list[dict[str, Any]]:
    """What would load with these settings, without starting a host (``bolt-host plugins``)."""
    return plugin_infos(make_plugin_manager(settings))


async def await_maybe(value: Any) -> Any:
    """Await ``value`` if it is awaitable; hooks may answer either way."""
    if inspect.isawaitable(value):
        return await value
    return value


async def call_all(hook: Any, **kwargs: Any) -> list[Any]:
    """Call every implementation and await each result."""
    results = hook(**kwargs)
    return [await await_maybe(r) for r in results]


async def call_first(hook: Any, **kwargs: Any) -> Any:
    return await await_maybe(hook(**kwargs))


def _allowed(name: str, settings: Settings) -> bool:
    if name in settings.disable_plugins:
        return False
    return settings.plugins is None or name in settings.plugins


def _register(pm: pluggy.PluginManager, plugin: object, name: str, info: PluginInfo) -> None:
    if pm.get_plugin(name) is not None:
        first = pm.bolt_info[name].described()  # type: ignore[attr-defined]
        raise PluginLoadError(
            f"two plugins are named {name!r}: the {first} and the {info.described()}; rename or disable one of them"
        )
    try:
        pm.register(plugin, name=name)
    except (ValueError, pluggy.PluginValidationError) as exc:
        raise PluginLoadError(f"cannot register plugin {name!r}: {exc}") from exc
    pm.bolt_info[name] = info  # type: ignore[attr-defined]


def _entry_point_plugins() -> list[tuple[str, ModuleType, str | None, str]]:
    found = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            module = ep.load()
        except Exception as exc:
            raise PluginLoadError(f"entry point {ep.name!r} ({ep.value}) failed to import: {exc}") from exc
        version = ep.dist.version if ep.dist else None
        found.append((ep.name, module, version, ep.value))
    return found


def _plugins_dir_modules(folder: Path) -> list[tuple[str, ModuleType, Path]]:
    if not folder.is_dir():
        raise PluginLoadError(f"plugins dir {folder} does not exist")
    modules = []
    for path in sorted(folder.glob("*.py")):
        module_name = f"bolt_host_plugins_dir.{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise PluginLoadError(f"cannot load plugin file {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise PluginLoadError(f"plugin file {path} failed to import: {exc}") from exc
        modules.append((path.stem, module, path))
    return modules


def run_coroutine(value: Any) -> Any:
    """Run an awaitable from sync code (CLI helpers only)."""
    if inspect.isawaitable(value):
        return asyncio.run(value)  # type: ignore[arg-type]
    return value
