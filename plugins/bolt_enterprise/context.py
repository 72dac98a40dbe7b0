"""The enterprise backend's services for one host, kept in ``host.state["enterprise"]``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from bolt_host.plugin import Actor, host_of, read_body

from . import devices, subscriptions
from .access import require_login
from .assets import find_app
from .devices import DeviceInstalls
from .replies import EnterpriseError
from .subscriptions import Subscriptions

if TYPE_CHECKING:
    from bolt_host.plugin import Host

STATE_KEY = "enterprise"


@dataclass
class Enterprise:
    host: Host
    subscriptions: Subscriptions
    devices: DeviceInstalls

    @classmethod
    def start(cls, host: Host) -> Enterprise:
        host.db.migrate(subscriptions.TABLE, subscriptions.SCHEMA)
        host.db.migrate(devices.TABLE, devices.SCHEMA)
        enterprise = cls(host, Subscriptions(host.db, host.users, host.visibility), DeviceInstalls(host))
        host.state[STATE_KEY] = enterprise
        return enterprise

    @property
    def base_url(self) -> str:
        return self.host.settings.url

    def app(self, ref: Any) -> dict[str, Any]:
        """The installed app an asset id or app name refers to; 404 otherwise."""
        found = find_app(self.host.apps.list(), ref)
        if found is None:
            raise EnterpriseError(404, f"No app {str(ref)[:80]!r} in the store" if ref else "'app' is missing")
        return found

    def visible_app(self, ref: Any, user_name: str) -> dict[str, Any]:
        """Like :meth:`app`, limited to the apps ``user_name`` may see (others look absent)."""
        found = find_app(self.host.visibility.visible_apps(user_name), ref)
        if found is None:
            raise EnterpriseError(404, f"No app {str(ref)[:80]!r} in the store" if ref else "'asset' is missing")
        return found


    async def change(self, adding: bool, app: str, kind: str, subjects: list[str], by: str | None, event: str) -> None:
        """Subscribe (``adding``) or unsubscribe ``subjects`` of ``kind`` to ``app``, then publish ``event``."""
        for subject in subjects:
            if adding:
                self.subscriptions.subscribe(app, kind, subject, by)
            else:
                self.subscriptions.unsubscribe(app, kind, subject)
        await self.host.publish(event, {"app": app, kind: subjects}, publisher="enterprise")


def enterprise_of(request: Request) -> Enterprise:
    return host_of(request).state[STATE_KEY]


async def login_form(request: Request) -> tuple[Actor, dict[str, Any], Enterprise]:
    """``(caller, form or JSON body, enterprise)`` for a logged-in caller's write; the caller is checked first."""
    who = require_login(request)
    return who, await read_body(request), enterprise_of(request)
