"""Every hook of the core; plugins may declare more of their own (``register_hookspecs``).

Plugins implement hooks with ``@bolt_host.hookimpl`` (or ``bolt_host.plugin.hookimpl``).
A hook may return its value directly or an awaitable; every call goes through
``host.hooks.call`` (:class:`bolt_host.plugins.Hooks`), which awaits each answer
before it counts, so an ``async def`` implementation of a ``firstresult`` hook may
abstain by returning None.  Plugins never call ``pm.hook`` themselves.  pluggy's order
applies: last registered first, ``tryfirst``/``trylast`` honoured; hook wrappers are refused.

Lifecycle, in this order:
1. The plugin manager is made: every plugin is registered, then ``register_hookspecs``
   adds the hooks plugins declare, then misspelled implementations fail start-up.
2. The app is built (``create_app``): ``register_routes``, ``register_error_formats`` and
   ``register_upload_paths`` run once, synchronously, and must return plain lists.  The
   host's services are declared (typed) on :class:`bolt_host.host.Host` but not started:
   route factories build routes and keep no service; handlers use ``host``'s services,
   which exist and are started before any request is served.
3. ``Host.start()``: storage, then every service (apps, supervisor, tasks, catalog with
   ``register_sources``), then each plugin's ``startup``, one at a time.
4. Requests are served; ``on_event``, ``permission_allowed``, ``app_environment``... fire.
5. ``Host.stop()``: each plugin's ``shutdown``, then the services, newest first.

Families:
- ``register_*``: return a list; the host merges all lists.  Two plugins
  registering the same route path or name is a start-up error naming both.
- ``on_*`` / ``startup`` / ``shutdown``: notifications; return values ignored.
- ``firstresult`` hooks: decisions; the first non-None answer wins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bolt_host import hookspec

if TYPE_CHECKING:
    from bolt_host.host import Host
    from bolt_host.services.events import Event



@hookspec
def register_hookspecs() -> Any:
    """Return a list of modules or classes whose functions are hookspecs (marked with
    ``@bolt_host.hookspec``): the hooks this plugin lets other plugins implement.

    Called once while the plugin manager is made, before implementations are checked, so
    a plugin's own hooks are declared as if they were the core's (pytest's
    ``pytest_addhooks``).  Call them with ``host.hooks.call(name, ...)``; a hook declared by
    a plugin that is not loaded does not exist (``host.hooks.declared(name)`` says so).
    Declaring a hook the core or another plugin already declares fails start-up.
    """


@hookspec
def startup(host: Host) -> Any:
    """Called once when the host has opened its storage and services, before serving.

    Use it to create tables, start background tasks or check configuration.
    Return None or an awaitable.  Implementations are called one at a time; an
    exception aborts start-up with :class:`bolt_host.host.PluginStartupError`
    naming the plugin, after the host has stopped everything started so far
    (its services, and the plugins already started, through their ``shutdown``).
    """


@hookspec
def shutdown(host: Host) -> Any:
    """Called once when the host stops, before its services close.

    Stop background tasks here.  Return None or an awaitable.  Every
    implementation is called even if an earlier one fails; after a failed
    start-up, only plugins whose ``startup`` completed (or that have none) are.
    """


@hookspec
def register_routes(host: Host) -> Any:
    """Return a list of Starlette ``Route``/``Mount`` objects to mount on the host.

    Called once while the app is built, before ``Host.start()``: build the routes and keep
    no service in the factory; handlers read ``host``'s services, which exist and are
    started before any request is served.  Must return a plain list (not an awaitable).
    Paths must be unique across plugins: a path (with its methods) registered twice fails
    start-up naming both plugins.  Handlers should use only ``bolt_host.plugin``.
    """


@hookspec
def register_upload_paths(host: Host) -> Any:
    """Return a list of path prefixes whose request bodies may be as large as
    ``settings.max_upload_bytes`` (uploads); every other route is capped at ``max_body_bytes``.

    Called once while the app is built; lists are merged.  The body-limit middleware
    enforces the cap while the body streams, so a handler never sees more than that.
    """


@hookspec
def register_sources(host: Host) -> Any:
    """Return a list of package sources (objects with ``name`` and the
    :class:`bolt_host.services.catalog.Source` methods) to add to the catalog.

    Called once at start-up, while the catalog is built (after apps and tasks exist).
    Source names must be unique across plugins.
    """


@hookspec
def register_error_formats(host: Host) -> Any:
    """Return a list of ``(path_prefix, render)`` pairs: a plugin that speaks another API's
    format claims its paths for the errors the host answers itself, before any route runs.

    Those errors are the body-limit 413 (a declared ``Content-Length`` over the cap), and
    the 500/507 the safety net answers for an exception no handler caught.  For a request
    under ``path_prefix``, ``render(status, error)`` (``error`` a
    :class:`bolt_host.errors.BoltError`) returns the JSON object to send instead of the
    Bolt envelope; the HTTP status stays ``status``.  The longest matching prefix wins.
    Called once while the app is built; a prefix claimed twice fails start-up naming both
    plugins.  A renderer that raises is logged and the Bolt envelope is sent instead.
    """


@hookspec
def on_event(host: Host, event: Event) -> Any:
    """Called for every event on the host's bus (``app-installed``,
    ``app-started``, ``user-created``, ...), including the events apps publish
    through ``POST /api/events/<name>``.

    ``event.publisher`` is ``"bolt"`` for the host's own events (``event.from_host``)
    and the app's name for an app's; act on a host event only when
    ``event.from_host``, since the name alone proves nothing.  Runs concurrently
    with other listeners; return None or an awaitable.  Failures are logged and
    never reach the publisher.
    """


@hookspec(firstresult=True)
def permission_allowed(host: Host, actor: dict[str, Any] | None, action: str, resource: str | None) -> Any:
    """Decide whether ``actor`` (``{"user": ..., "app": ..., "isAdmin": ...}`` or
    None for anonymous) may perform ``action`` on ``resource``.

    firstresult: the first implementation returning True or False decides;
    return None to abstain.  When every plugin abstains, the host's built-in
    rules decide (see ``bolt_host.web.auth``).  Asked by the core's checks and by the
    store backends' own (``bolt_host.plugin.ask_permission``).  ``action`` names what is asked,
    e.g. ``apps.install``, ``apps.start``, ``users.create``.
    """


@hookspec
def app_environment(host: Host, app: dict[str, Any]) -> Any:
    """Return a dict of extra environment variables for ``app`` before it starts.

    All implementations are called and their dicts merged (later plugins do not
    override keys set by earlier ones; the core's own variables always win).
    """


@hookspec(firstresult=True)
def requested_port(host: Host, app: dict[str, Any]) -> Any:
    """Return the port (an int in the host's port range) that ``app`` should listen on, or
    None to let the host's pool choose one.

    Asked each time the app starts.  firstresult: the first int wins.  The host honours it
    only when no other app holds it and nothing listens on it; otherwise the start fails
    naming the port.  Used by the market backend for a clone's requested entrance port.
    """


@hookspec(firstresult=True)
def install_on_device(host: Host, device_id: str, package: dict[str, Any], actor: dict[str, Any]) -> Any:
    """Ask a fleet backend to install ``package`` on device ``device_id``.

    firstresult: return a dict describing the started operation; None means
    no loaded plugin manages devices.  Used by the enterprise backend so it
    never imports the device backend.
    """


@hookspec(firstresult=True)
def uninstall_from_device(host: Host, device_id: str, package: dict[str, Any], actor: dict[str, Any]) -> Any:
    """Ask a fleet backend to remove ``package`` from device ``device_id``.

    firstresult: return a dict describing the started operation; None means
    no loaded plugin manages devices.
    """


@hookspec(firstresult=True)
def list_devices(host: Host, actor: dict[str, Any]) -> Any:
    """Return the devices ``actor`` may manage (list of dicts), or None when no
    loaded plugin manages devices.
    """
