"""The Host: owns the storage, the plugin manager and every service.

It is handed to every hook.  Every service is declared with its type in
``__init__``; they exist from :meth:`Host.start` on (storage first, then the
services, then the plugins' ``startup``), which completes before any request is
served.  Plugins use the attributes listed in ``bolt_host.plugin.PluginHost`` and
never reach into private state.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import pluggy

from bolt_host import __version__
from bolt_host.config import Settings
from bolt_host.plugins import Hooks, PluginLoadError, await_maybe, make_plugin_manager
from bolt_host.services.app_runtime import SECTION as SUPERVISOR_SECTION
from bolt_host.services.envnames import AdminEnv
from bolt_host.services.events import Event, EventBus
from bolt_host.services.integrity import verify_app
from bolt_host.services.sessions import LoginThrottle, Sessions, load_secret_key
from bolt_host.services.supervisor import Supervisor
from bolt_host.services.token_users import TokenUsers
from bolt_host.services.tokens import SECTION as TOKENS_SECTION
from bolt_host.services.tokens import AppTokens
from bolt_host.services.users import Users
from bolt_host.statefile import RUNTIME_STATE_FILE, StateFile, move_tables_from
from bolt_host.storage import INITIAL_SCHEMA, Database

if TYPE_CHECKING:
    import httpx
    from starlette.applications import Starlette

    from bolt_host.services.app_hooks import AppHookDelivery
    from bolt_host.services.appdb import AppDatabases
    from bolt_host.services.apps import Apps
    from bolt_host.services.catalog import Catalog
    from bolt_host.services.registry import RegistryClient
    from bolt_host.services.sandbox import Isolation
    from bolt_host.services.sessions import LoginThrottle
    from bolt_host.services.tasks import Tasks
    from bolt_host.services.visibility import Visibility

log = logging.getLogger("bolt_host")

HOST_SCHEMAS = {"host": INITIAL_SCHEMA}


class PluginStartupError(PluginLoadError):
    """A plugin's ``startup`` hook raised; the message names the plugin."""


class Host:
    def __init__(self, settings: Settings, plugins: Iterable[object] = ()) -> None:
        self.settings = settings
        self.version = __version__
        self.pm: pluggy.PluginManager = make_plugin_manager(settings, extra=plugins)
        self.hooks = Hooks(self.pm, self)
        self.events = EventBus()
        self.started = False
        self.started_at: float | None = None
        self.generated_admin_password: str | None = None
        self.state: dict[str, Any] = {}  # per-plugin scratch space, keyed by plugin name
        # Routes allowed bodies up to max_upload_bytes: uploads, the app proxy, and the
        # plugins' ``register_upload_paths`` (added while the app is built).
        self.large_body_prefixes: list[str] = ["/x/", "/api/apps/upload"]
        # (path prefix, renderer) from ``register_error_formats``, longest prefix first.
        self.error_formats: list[tuple[str, Callable[[int, Any], dict[str, Any]]]] = []
        self.app: Starlette | None = None
        self.isolation: Isolation | None = None  # once started (None: turned off)
        self.admin_env: AdminEnv  # created when storage opens
        # The services: declared here with their types, created by start() (storage first).
        self.db: Database
        self.runtime_state: StateFile
        self.users: Users
        self.sessions: Sessions
        self.token_users: TokenUsers
        self.login_throttle: LoginThrottle
        self.tokens: AppTokens
        self.apps: Apps
        self.appdb: AppDatabases
        self.visibility: Visibility
        self._proxy_client: httpx.AsyncClient | None = None
        self.supervisor: Supervisor
        self.app_hooks: AppHookDelivery
        self.tasks: Tasks
        self.catalog: Catalog
        self._running: contextlib.AsyncExitStack | None = None  # how to undo the current start

    # lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        """Open storage, start the services and the plugins; on any failure, stop what started.

        A plugin whose ``startup`` raises fails the start with :class:`PluginStartupError`
        naming it; everything started before it (services, earlier plugins) is stopped
        again, so a failed start leaves no task, process or open file behind.
        """
        if self.started:
            return
        stack = contextlib.AsyncExitStack()
        try:
            self._open_storage(stack)
            await self._start_services(stack)
            await self._start_plugins(stack)
        except BaseException:
            try:
                await stack.aclose()
            except Exception:
                log.exception("cleaning up after a failed start-up failed too")
            raise
        self._running = stack
        self.started = True
        self.started_at = time.time()
        await self.events.publish("system-started", {"version": self.version})

    async def stop(self) -> None:
        """Undo :meth:`start`, newest first: plugins' ``shutdown``, services, events, storage."""
        if not self.started:
            return
        self.started = False
        stack, self._running = self._running, None
        if stack is not None:
            await stack.aclose()

    def _open_storage(self, stack: contextlib.AsyncExitStack) -> None:
        data_dir = self.settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("apps", "public", "databases", "logs/apps", "logs/tasks", "cache", "uploads"):
            (data_dir / sub).mkdir(parents=True, exist_ok=True)
        self.db = Database(data_dir / "db.json")
        stack.callback(self.db.close)
        stack.push_async_callback(self._close_events)
        self.db.migrate_all(HOST_SCHEMAS)
        self.runtime_state = StateFile(data_dir / RUNTIME_STATE_FILE)
        stack.callback(self.runtime_state.close)
        move_tables_from(self.db, self.runtime_state, {SUPERVISOR_SECTION: "name", TOKENS_SECTION: "app"})
        self.isolation = self._isolation()
        self.admin_env = AdminEnv(self.runtime_state)
        if self.isolation is not None:
            self.isolation.secure_data_dir()
        self.users = Users(self.db)
        self.sessions = Sessions(self.db, load_secret_key(data_dir))
        self.token_users = TokenUsers(self.db, self.sessions, self.users)
        self.login_throttle = LoginThrottle()
        self.tokens = AppTokens(self.runtime_state)
        self.generated_admin_password = self.users.bootstrap_admin(data_dir, self.settings.admin_password)
        self.events.subscribe(self._forward_event_to_plugins)
        stack.callback(self.events.unsubscribe, self._forward_event_to_plugins)

    async def _close_events(self) -> None:
        self.events.close_streams()
        await self.events.drain()

    async def _start_services(self, stack: contextlib.AsyncExitStack) -> None:
        """Apps, per-app data, visibility, supervision, event delivery to apps, tasks, catalog.

        Each service's way out is pushed on ``stack`` as soon as it exists.
        """
        from bolt_host.services.app_hooks import AppHookDelivery
        from bolt_host.services.appdb import AppDatabases
        from bolt_host.services.apps import Apps
        from bolt_host.services.catalog import build_catalog
        from bolt_host.services.registry import remove_partial_downloads
        from bolt_host.services.tasks import Tasks
        from bolt_host.services.visibility import Visibility

        settings = self.settings
        data_dir = settings.data_dir
        self.apps = Apps(self.db, data_dir, settings.local_repo, self.publish)
        self.apps.clean_staging()
        self.apps.dependencies.timeout = settings.dependency_timeout_seconds
        remove_partial_downloads(data_dir / "cache")
        self.appdb = AppDatabases(data_dir / "databases")
        stack.callback(self.appdb.close)
        self.apps.appdb = self.appdb
        self.visibility = Visibility(self.db, self.users, self.apps)
        self.apps.visibility = self.visibility
        self.apps.registry = self._registry_client()
        if self.apps.registry is not None:
            stack.push_async_callback(self.apps.registry.aclose)
        stack.push_async_callback(self._close_proxy_client)
        self.supervisor = Supervisor(
            state=self.runtime_state,
            data_dir=data_dir,
            tokens=self.tokens,
            host_url=settings.url,
            port_range=settings.port_range,
            grace_seconds=settings.stop_grace_seconds,
            ready_timeout=settings.ready_timeout_seconds,
            stats_interval=settings.stats_interval_seconds,
            publish=self._publish_supervision,
            extra_env=self._plugin_environment,
            requested_port=self._plugin_port,
            load_app=self.apps.get,
            verify_app=verify_app,
            autostart=settings.autostart,
            isolation=self.isolation,
            max_instances=settings.max_instances,
            health_interval=settings.health_interval_seconds,
        )
        self.apps.supervisor = self.supervisor
        self.apps.isolation = self.isolation
        self.apps.admin_env = self.admin_env
        self.app_hooks = AppHookDelivery(self.apps, self.supervisor, self.tokens)
        stack.push_async_callback(self.app_hooks.aclose)
        self.events.subscribe(self.app_hooks)
        stack.callback(self.events.unsubscribe, self.app_hooks)
        if self.isolation is not None:  # runs after the supervisor's shutdown below
            stack.callback(self.isolation.remove_empty_groups)
        stack.push_async_callback(self.supervisor.shutdown)
        await self.supervisor.boot(self.settings.start_concurrency)
        self.tasks = Tasks(self.db, data_dir / "logs" / "tasks", self.publish)
        stack.push_async_callback(self.tasks.shutdown)
        await self.tasks.start()
        self.catalog = await build_catalog(self)
        stack.push_async_callback(self.catalog.close)
        if settings.install_bundled:
            from bolt_host.services.bundled import install_bundled

            await install_bundled(self.apps, settings.bundled_apps)

    async def _start_plugins(self, stack: contextlib.AsyncExitStack) -> None:
        """Each plugin's ``startup``, one at a time; a failure names the plugin.

        ``shutdown`` later reaches every plugin whose start-up completed (and those
        with no ``startup`` at all), never one that did not get that far.
        """
        with_startup = set(self.hooks.implementers("startup"))
        started: set[str] = set()
        stack.push_async_callback(self._stop_plugins, lambda name: name not in with_startup or name in started)
        for plugin, call in self.hooks.bound("startup"):  # pluggy's order: last registered first
            try:
                await await_maybe(call())
            except Exception as exc:
                raise PluginStartupError(f"plugin {plugin!r} failed to start: {exc}") from exc
            started.add(plugin)

    async def _stop_plugins(self, wanted: Callable[[str], bool]) -> None:
        for plugin, call in self.hooks.bound("shutdown"):
            if not wanted(plugin):
                continue
            try:
                await await_maybe(call())
            except Exception:
                log.exception("plugin %s failed during shutdown", plugin)

    def _isolation(self) -> Isolation | None:
        """The isolation service, or None when the admin turned it off (``BOLT_ISOLATION=off``)."""
        from bolt_host.services.sandbox import BWRAP, Isolation, detect_mode

        settings = self.settings
        if settings.isolation == "off":
            return None
        return Isolation(
            data_dir=settings.data_dir,
            state=self.runtime_state,
            uid_range=settings.app_uid_range,
            default_limits=settings.default_limits,
            mode=BWRAP if settings.isolation == "bwrap" else detect_mode(),
            exec_helper_setting=settings.exec_helper,
        )

    @property
    def proxy_client(self) -> httpx.AsyncClient:
        """The client of ``/x/<app>/`` requests, made at the first one (httpx costs memory)."""
        if self._proxy_client is None:
            import httpx

            # trust_env=False: an HTTP_PROXY in the host's environment must not carry app traffic away
            self._proxy_client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.settings.proxy_timeout_seconds, connect=5.0), trust_env=False
            )
        return self._proxy_client

    async def _close_proxy_client(self) -> None:
        client, self._proxy_client = self._proxy_client, None
        if client is not None:
            await client.aclose()

    def _registry_client(self) -> RegistryClient | None:
        if not self.settings.registry:
            return None
        from bolt_host.services.registry import RegistryClient

        return RegistryClient(
            self.settings.registry, self.settings.data_dir / "cache", max_bytes=self.settings.max_download_bytes
        )

    async def _publish_supervision(self, name: str, body: dict[str, Any]) -> None:
        await self.publish(name, body)

    async def _plugin_environment(self, app: dict[str, Any]) -> dict[str, str]:
        """Environment that plugins add to ``app`` (earlier plugins keep their keys), then the
        values an admin set for its declared names."""
        merged: dict[str, str] = {}
        for extra in await self.hooks.call("app_environment", app=app):
            for key, value in (extra or {}).items():
                merged.setdefault(str(key), str(value))
        merged.update(self.admin_env.values(str(app.get("name"))))
        return merged

    async def _plugin_port(self, app: dict[str, Any]) -> int | None:
        """The port a plugin asks for ``app`` (first answer wins), or None to let the pool choose."""
        port = await self.hooks.call("requested_port", app=app)
        return port if isinstance(port, int) and not isinstance(port, bool) else None

    async def _forward_event_to_plugins(self, event: Event) -> None:
        await self.hooks.call("on_event", event=event)

    # helpers for hooks and handlers -----------------------------------------
    @property
    def uptime(self) -> float:
        return time.time() - self.started_at if self.started_at else 0.0

    def body_limit_for(self, path: str) -> int:
        """The request-body cap for ``path``: uploads get the larger one."""
        if any(path.startswith(prefix) for prefix in self.large_body_prefixes):
            return self.settings.max_upload_bytes
        return self.settings.max_body_bytes

    def error_format_for(self, path: str) -> Callable[[int, Any], dict[str, Any]] | None:
        """The renderer a plugin claimed for host-level errors on ``path``, if any."""
        return next((render for prefix, render in self.error_formats if path.startswith(prefix)), None)

    async def publish(self, name: str, body: Any = None, publisher: str = "bolt") -> Event:
        return await self.events.publish(name, body, publisher)
