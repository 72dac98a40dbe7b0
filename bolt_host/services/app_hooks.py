"""Delivers events to the apps that asked for them in ``bolt.hooks``.

A hook key is ``publisher/event`` (``notes/note-added``, ``bolt/app-started``) or a
bare event name, which means the host's event of that name (``app-started``), never
an app's event that happens to share it; its value is the route on the app (or ``{route}``).
Each delivery is a POST of ``{name, body, publisher, time, token}`` to the
running app, where ``token`` is the receiving app's own token so it can trust
the sender.  Apps that are not running are skipped.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from bolt_host.lazy import lazy_module
from bolt_host.services.events import Event

if TYPE_CHECKING:
    import httpx
else:
    httpx = lazy_module("httpx")  # imported when first used

log = logging.getLogger("bolt_host.app_hooks")
DELIVERY_TIMEOUT = 5.0


def hook_route(hooks: dict[str, Any], event: Event) -> str | None:
    keys = [f"{event.publisher}/{event.name}"]
    if event.from_host:
        keys.insert(0, event.name)
    for key in keys:
        target = hooks.get(key)
        if isinstance(target, dict):
            target = target.get("route")
        if isinstance(target, str) and target:
            return "/" + target.lstrip("/")
    return None


class AppHookDelivery:
    def __init__(self, apps: Any, supervisor: Any, tokens: Any) -> None:
        self._apps = apps
        self._supervisor = supervisor
        self._tokens = tokens
        self._client: httpx.AsyncClient | None = None  # made at the first delivery: most hosts never deliver
        self.delivered = 0
        self._cached: tuple[int, list[tuple[str, dict[str, Any]]]] | None = None

    async def __call__(self, event: Event) -> None:
        for name, hooks in self._subscribers():
            route = hook_route(hooks, event)
            if route is None:
                continue
            context = self._supervisor.context(name) if self._supervisor else None
            token = self._tokens.token_of(name)
            if not context or context.get("status") != "running" or not context.get("port") or not token:
                continue
            await self._deliver(name, context, route, event, token)

    def _subscribers(self) -> list[tuple[str, dict[str, Any]]]:
        """(name, hooks) of the installed apps that have hooks, re-read only after a db write."""
        revision = self._apps.revision
        if self._cached is None or self._cached[0] != revision:
            found = self._apps.with_field("hooks")
            self._cached = (revision, found)
        return self._cached[1]

    async def _deliver(self, name: str, context: dict[str, Any], route: str, event: Event, token: str) -> None:
        url = f"http://127.0.0.1:{context['port']}{route}"
        payload = {**event.to_dict(), "token": token}
        try:
            if self._client is None:
                self._client = httpx.AsyncClient(timeout=DELIVERY_TIMEOUT)
            response = await self._client.post(url, json=payload)
            self.delivered += 1
            if response.status_code >= 400:
                log.warning("app %s answered %s to event %s", name, response.status_code, event.name)
        except httpx.HTTPError as exc:
            log.warning("could not deliver %s to app %s: %s", event.name, name, type(exc).__name__)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
