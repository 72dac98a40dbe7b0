"""Plugin manager factory and discovery.

Three channels: the ``bolt_host`` entry-point group (the built-in store
backends are registered there exactly like third-party plugins), loose
``*.py`` files in ``--plugins-dir``, and an explicit list for tests and
embedding.  ``BOLT_PLUGINS`` is an allow-list, ``BOLT_DISABLE_PLUGINS`` a
deny-list; both name plugins by entry-point name or file stem.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterable
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
    _add_plugin_hookspecs(pm)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginLoadError(f"plugin implements an unknown hook: {exc}") from exc
    _refuse_wrappers(pm)
    return pm


def _add_plugin_hookspecs(pm: pluggy.PluginManager) -> None:
    """The hooks plugins declare for each other (``register_hookspecs``), before implementations are checked."""
    for plugin, namespaces in call_each_now(pm.hook.register_hookspecs):
        for namespace in namespaces or []:
            try:
                pm.add_hookspecs(namespace)
            except (ValueError, pluggy.PluginValidationError) as exc:
                raise PluginLoadError(f"plugin {plugin!r}: cannot add its hookspecs: {exc}") from exc


def _refuse_wrappers(pm: pluggy.PluginManager) -> None:
    """Hooks are called through :class:`Hooks`, which awaits every answer; pluggy's wrappers would be skipped."""
    for name in dir(pm.hook):
        hook = getattr(pm.hook, name)
        for impl in hook.get_hookimpls() if isinstance(hook, pluggy.HookCaller) else []:
            if impl.hookwrapper or impl.wrapper:
                raise PluginLoadError(f"plugin {impl.plugin_name!r}: hook wrappers are not supported ({name})")


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


def _implementations(hook: pluggy.HookCaller) -> list[pluggy.HookImpl]:
    """The hook's implementations in pluggy's calling order (last registered first,
    ``tryfirst``/``trylast`` honoured)."""
    return list(reversed(hook.get_hookimpls()))


def _arguments(hook: pluggy.HookCaller, impl: pluggy.HookImpl, kwargs: dict[str, Any]) -> list[Any]:
    missing = [name for name in impl.argnames if name not in kwargs]
    if missing:
        raise TypeError(f"hook {hook.name!r} called without {', '.join(missing)}")
    return [kwargs[name] for name in impl.argnames]


async def call_all(hook: pluggy.HookCaller, **kwargs: Any) -> list[Any]:
    """Call every implementation, awaiting each result; None results are dropped (pluggy's rule)."""
    results = []
    for impl in _implementations(hook):
        result = await await_maybe(impl.function(*_arguments(hook, impl, kwargs)))
        if result is not None:
            results.append(result)
    return results


async def call_first(hook: pluggy.HookCaller, **kwargs: Any) -> Any:
    """A ``firstresult`` decision: each implementation's answer is awaited before it counts, so an
    ``async def`` implementation that answers None abstains (pluggy alone would take its
    coroutine as the answer).  The first non-None answer wins; None when all abstain."""
    for impl in _implementations(hook):
        result = await await_maybe(impl.function(*_arguments(hook, impl, kwargs)))
        if result is not None:
            return result
    return None


def call_each_now(hook: pluggy.HookCaller, **kwargs: Any) -> list[tuple[str, Any]]:
    """``(plugin name, result)`` of every implementation, for hooks that run while the app is built
    (no event loop to await on): an implementation that answers with an awaitable is an error."""
    results = []
    for impl in _implementations(hook):
        result = impl.function(*_arguments(hook, impl, kwargs))
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise PluginLoadError(f"plugin {impl.plugin_name!r}: {hook.name} must return a list, not a coroutine")
        results.append((impl.plugin_name, result))
    return results


class Hooks:
    """The one way the host and its plugins call hooks: ``await host.hooks.call(name, **arguments)``.

    ``host`` is passed for you.  A ``firstresult`` hook answers its first non-None result,
    every other hook the list of its non-None results; either way each implementation's
    result is awaited first (see :func:`call_first`).
    """

    def __init__(self, pm: pluggy.PluginManager, host: object) -> None:
        self._pm = pm
        self._host = host

    def caller(self, name: str) -> pluggy.HookCaller:
        hook: pluggy.HookCaller | None = getattr(self._pm.hook, name, None)
        if hook is None:
            raise LookupError(f"no hook named {name!r} is declared (is the plugin that declares it loaded?)")
        return hook

    def declared(self, name: str) -> bool:
        """Whether some loaded plugin (or the core) declares hook ``name``."""
        hook = getattr(self._pm.hook, name, None)
        return hook is not None and hook.spec is not None

    def implemented(self, name: str) -> bool:
        """Whether any loaded plugin implements hook ``name`` (asked now: registrations may change)."""
        return bool(self.caller(name).get_hookimpls())

    def _arguments(self, hook: pluggy.HookCaller, kwargs: dict[str, Any]) -> dict[str, Any]:
        if hook.spec is not None and "host" in hook.spec.argnames:
            kwargs.setdefault("host", self._host)
        return kwargs

    async def call(self, name: str, **kwargs: Any) -> Any:
        hook = self.caller(name)
        arguments = self._arguments(hook, kwargs)
        if hook.spec is not None and hook.spec.opts.get("firstresult"):
            return await call_first(hook, **arguments)
        return await call_all(hook, **arguments)

    def bound(self, name: str, **kwargs: Any) -> list[tuple[str, Callable[[], Any]]]:
        """``(plugin name, call)`` for every implementation in calling order, for the host's
        lifecycle loops that must name the plugin whose call failed."""
        hook = self.caller(name)
        arguments = self._arguments(hook, kwargs)
        return [
            (impl.plugin_name, functools.partial(impl.function, *_arguments(hook, impl, arguments)))
            for impl in _implementations(hook)
        ]

    async def each(self, name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """``(plugin name, awaited result)`` of every implementation, in calling order."""
        return [(plugin, await await_maybe(call())) for plugin, call in self.bound(name, **kwargs)]

    def each_now(self, name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """:func:`call_each_now` for hook ``name`` (hooks that run while the app is built)."""
        hook = self.caller(name)
        return call_each_now(hook, **self._arguments(hook, kwargs))

    def implementers(self, name: str) -> list[str]:
        """Names of the plugins implementing hook ``name``, in calling order."""
        return [impl.plugin_name for impl in _implementations(self.caller(name))]


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


def _entry_point_plugins() -> list[tuple[str, object, str | None, str]]:
    """``(name, plugin, version, entry point value)`` for every entry point of the group."""
    found = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
        except Exception as exc:
            raise PluginLoadError(f"entry point {ep.name!r} ({ep.value}) failed to import: {exc}") from exc
        version = ep.dist.version if ep.dist else None
        found.append((ep.name, plugin_object(loaded), version, ep.value))
    return found


def plugin_object(loaded: object) -> object:
    """What to register for an entry point: a package's ``plugin`` object (the shape the built-in
    backends have) when it has one, else what the entry point names (a module of hook functions,
    or an object)."""
    if isinstance(loaded, ModuleType):
        return getattr(loaded, "plugin", None) or loaded
    return loaded


def _plugins_dir_modules(folder: Path) -> list[tuple[str, object, Path]]:
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
        modules.append((path.stem, plugin_object(module), path))
    return modules


def run_coroutine(value: Any) -> Any:
    """Run an awaitable from sync code (CLI helpers only)."""
    if inspect.isawaitable(value):
        return asyncio.run(value)  # type: ignore[arg-type]
    return value
