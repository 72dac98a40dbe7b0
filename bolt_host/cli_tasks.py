"""``bolt-host tasks list|show|log|cancel``, and the progress bar that follows a task."""

from __future__ import annotations

import json
from typing import Any

import click

from bolt_host.cli_client import ApiError, Client, json_option, print_json, print_table, remote, stderr_console

ACTIVE = {"queued", "running"}


def follow_task(
    client: Client, task_id: int, label: str, timeout: float | None = None, quiet: bool = False
) -> dict[str, Any]:
    """Poll a task until it finishes, drawing a progress bar on stderr; return its final record."""
    import time

    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    deadline = None if timeout is None else time.monotonic() + timeout
    console = stderr_console()
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=quiet, transient=False) as progress:
        bar = progress.add_task(escape(label), total=1.0)
        while True:
            record: dict[str, Any] = client.get(f"/api/tasks/{task_id}")
            status = record["status"]
            described = escape(f"{label} [{status}]")  # as text: "[running]" is not a rich style tag
            progress.update(bar, completed=float(record.get("progress") or 0), description=described)
            if status not in ACTIVE:
                return record
            if deadline is not None and time.monotonic() > deadline:
                raise ApiError(f"task {task_id} is still {status} after {timeout:g} s")
            time.sleep(0.2)  # polling interval between status requests


def raise_unless_succeeded(record: dict[str, Any]) -> None:
    if record["status"] != "succeeded":
        reason = record.get("error") or record["status"]
        raise ApiError(f"task {record['id']} ({record['kind']} {record['module']}) {record['status']}: {reason}")


@click.group("tasks")
def tasks() -> None:
    """Background tasks on a running host: installs, downloads, firmware."""


@tasks.command("list")
@click.option("--kind", default=None, help="Only this kind (install, download, ...).")
@click.option("--status", default=None, help="Only this status (queued, running, succeeded, failed, canceled).")
@click.option("--module", default=None, help="Only tasks about this app.")
@json_option
@remote
def tasks_list(client: Client, kind: str | None, status: str | None, module: str | None, as_json: bool) -> None:
    """List tasks, newest first.

    \b
    Examples:
      bolt-host tasks list
      bolt-host tasks list --status failed --module hello-web
    """
    params = {k: v for k, v in {"kind": kind, "status": status, "module": module}.items() if v}
    found = client.get("/api/tasks", params=params)
    if as_json:
        print_json(found)
        return
    rows = [
        [
            t["id"],
            t["kind"],
            t["module"],
            t.get("version") or "",
            _status(t),
            short_time(t.get("create_time")),
            t.get("error") or "",
        ]
        for t in found
    ]
    print_table(["id", "kind", "module", "version", "status", "created", "error"], rows, title="Tasks", keep=2, wrap=6)


def _status(task: dict[str, Any]) -> str:
    """``running 40%`` while it runs; the bare status otherwise."""
    if task["status"] == "running":
        return f"running {round(float(task.get('progress') or 0) * 100)}%"
    return str(task["status"])


def short_time(value: Any) -> str:
    """``2026-01-31 12:00:05`` (or ISO) -> ``01-31 12:00``: an 80-column table has no room for more."""
    if not isinstance(value, str) or len(value) < 16 or value[10] not in "T ":
        return "" if value is None else str(value)
    return f"{value[5:10]} {value[11:16]}"


@tasks.command("show")
@click.argument("task_id", type=int)
@click.option("--wait", is_flag=True, help="Wait until the task has finished, with a progress bar.")
@json_option
@remote
def tasks_show(client: Client, task_id: int, wait: bool, as_json: bool) -> None:
    """Show one task (exit 1 with --wait if it did not succeed).

    \b
    Examples:
      bolt-host tasks show 12 --wait
    """
    record = client.get(f"/api/tasks/{task_id}")
    if wait and record["status"] in ACTIVE:
        record = follow_task(client, task_id, f"task {task_id}", quiet=as_json)
    if as_json:
        print_json(record)
    else:
        for key in (
            "id",
            "kind",
            "module",
            "version",
            "status",
            "progress",
            "create_time",
            "start_time",
            "end_time",
            "error",
            "result",
        ):
            value = record.get(key)
            click.echo(f"{key:<12} {json.dumps(value) if isinstance(value, dict | list) else value}")
    if wait:
        raise_unless_succeeded(record)


@tasks.command("log")
@click.argument("task_id", type=int)
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the task has finished.")
@click.option("--start", type=int, default=0, show_default=True, help="First character to print.")
@json_option
@remote
def tasks_log(client: Client, task_id: int, follow: bool, start: int, as_json: bool) -> None:
    """Print a task's log (--json: one object with the text, once it is all there with -f).

    \b
    Examples:
      bolt-host tasks log 12 -f
    """
    import time

    offset, text = start, []
    while True:
        response = client.request("GET", f"/api/tasks/{task_id}/log", params={"start": offset})
        if as_json:
            text.append(response.text)
        elif response.text:
            click.echo(response.text, nl=False)
        offset = max(offset, int(response.headers.get("X-TEXT-SIZE", offset)))
        more = response.headers.get("X-MORE-DATA") == "true"
        if not follow or not more:
            break
        time.sleep(0.25)  # polling interval while the task runs
    if as_json:
        print_json({"id": task_id, "start": start, "end": offset, "more": more, "text": "".join(text)})


@tasks.command("cancel")
@click.argument("task_id", type=int)
@json_option
@remote
def tasks_cancel(client: Client, task_id: int, as_json: bool) -> None:
    """Cancel a queued task, or ask a running one to stop.

    \b
    Examples:
      bolt-host tasks cancel 12
    """
    record = client.post(f"/api/tasks/{task_id}/cancel")
    if as_json:
        print_json(record)
    else:
        click.echo(f"task {task_id} {record['status']}")
