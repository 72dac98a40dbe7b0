"""The host's log configuration: its own loggers at the chosen level, chatty libraries quieter.

httpx logs an INFO line per outgoing request, and amqtt / transitions narrate every broker
and state-machine step; at the default level that drowns the host's own lines.  Those
libraries stay at WARNING unless the level is ``debug``, which shows everything.
"""

from __future__ import annotations

import logging

LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "TRACE")

QUIET_LIBRARIES = ("httpx", "httpcore", "amqtt", "transitions", "hpack", "multipart", "aiomqtt", "paho", "asyncio")

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(level: str) -> None:
    """Root logger at ``level`` (uvicorn's TRACE counts as DEBUG); libraries at WARNING above debug."""
    name = level.upper()
    verbose = name in {"DEBUG", "TRACE"}
    logging.basicConfig(level="DEBUG" if verbose else name, format=FORMAT)
    for library in QUIET_LIBRARIES:
        logging.getLogger(library).setLevel(logging.NOTSET if verbose else logging.WARNING)
