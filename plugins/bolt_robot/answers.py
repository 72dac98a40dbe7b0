"""The robot API's error format: ``{"detail": "..."}`` as FastAPI writes it, which robot clients parse."""

from __future__ import annotations

from bolt_host.plugin import ErrorFormat, PluginError


class RobotError(PluginError):
    """A refused request, answered ``{"detail": message}`` with ``status``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(status, message)


ROBOT = ErrorFormat(lambda status, message, data: {"detail": message}, "robot")
