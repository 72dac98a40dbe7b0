"""The CLI's exit codes and the start-up refusal, apart from cli_client so ``serve`` needs no HTTP client."""

from __future__ import annotations

import click

EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_CONNECT = 3


class StartupError(click.ClickException):
    """A setting that prevents a server's start: one ``Error: ...`` line, exit 2, nothing touched."""

    exit_code = EXIT_USAGE
