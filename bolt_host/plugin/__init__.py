"""The public plugin API of bolt-host: everything a plugin may import, and nothing else.

Plugins (the four store backends included) import from here, and from
``bolt_host.errors`` for Bolt's error codes.  Every other module of ``bolt_host``
is internal and may change in any release; the names below keep their meaning
within a major version (see docs/plugins.md, "Stability").

Groups:

- **Hooks**: ``hookimpl``, ``hookspec``; hooks are called with ``host.hooks.call``.
- **The host**: ``Host`` with its typed services (``settings``, ``db``, ``events``,
  ``users``, ``sessions``, ``tokens``, ``apps``, ``supervisor``, ``tasks``, ``catalog``,
  ``visibility``, ``appdb``), ``Event``, ``Database``, ``INITIAL_SCHEMA``.
- **A plugin's own state**: ``JournalFile`` (rows in memory, committed in groups by
  appending what changed to a journal; for state that grows), ``move_tables_from``
  (moves rows an older release kept in the host's ``db.json`` into it).
- **Who is calling**: ``Actor``, ``actor``, ``host_of``, ``require_user``,
  ``require_admin``, ``require_installer``, ``require_operator``, ``require_caller``,
  ``require_app``, ``require_system_app``, ``refuse_non_system_app``, ``ask_permission``, ``admin_allowed``,
  ``check_login``, ``basic_credentials``, ``client_key``, ``cross_origin_write_allowed``,
  ``SAFE_METHODS``.
- **Answers**: ``ok``, ``read_body``, ``read_json_body``, ``require_str``, ``flag``,
  ``current_trace_id``, ``BoltError``, ``errors``; a backend's own error format with the
  ``register_error_formats`` hook, :class:`ErrorFormat` and :class:`PluginError`.
- **Uploads**: ``receive_multipart``, ``receive_raw``, ``ReceivedUpload``,
  ``UploadRefused`` (its ``kind`` constants in ``uploads``), ``clean_partial_uploads``,
  ``open_part_file``.
- **Packages and installs**: ``install_as_task``,
  ``TaskHandle``, ``TaskCancelled``, ``safe_extract``, ``extraction_dir``,
  ``pack_directory``, ``ExtractError``, ``read_tarball_manifest``, ``CatalogError``,
  ``read_manifest``, ``build_app``, ``install_preview``, ``app_name_for``, ``inside``, ``is_firmware``,
  ``RegistrySource``, ``UploadSource``, ``RegistryClient``, ``RegistryError``.
- **App environment names**: ``declared_names``, ``caller_env_problem``, ``refusal`` (the
  core's rule: callers set only the names a manifest declares).
- **Small helpers**: ``jsondepth`` (JSON with its nesting capped), ``fits_filesystem``,
  ``compare_versions``, ``max_version``, ``sort_key``, ``resolve_version``,
  ``render_readme`` (a README as safe HTML),
  ``now_iso``, ``format_time``, ``is_port_free``, ``load_secret_key``, ``lazy_module`` (a heavy
  dependency imported at its first use, so an unused backend costs no memory), ``lazy_endpoint``
  (a route's handler named ``"module:function"``, its module imported at the first request), ``SystemCpu``
  (the machine's CPU use between two readings, without psutil).
"""

from __future__ import annotations

from bolt_host import errors, hookimpl, hookspec, jsondepth
from bolt_host.errors import BoltError
from bolt_host.host import Host
from bolt_host.journal import JournalFile
from bolt_host.lazy import lazy_endpoint, lazy_module
from bolt_host.plugin.answers import ErrorFormat, PluginError, current_trace_id, read_json_body, retry_after_headers
from bolt_host.plugin.installs import install_as_task
from bolt_host.services.catalog import CatalogError, RegistrySource, UploadSource, is_firmware, read_tarball_manifest
from bolt_host.services.envnames import caller_env_problem, declared_names, refusal
from bolt_host.services.events import Event
from bolt_host.services.extract import ExtractError, extraction_dir, pack_directory, safe_extract
from bolt_host.services.manifest import (
    app_name_for,
    build_app,
    fits_filesystem,
    inside,
    install_preview,
    read_manifest,
)
from bolt_host.services.ports import is_port_free
from bolt_host.services.readme_html import render_readme
from bolt_host.services.registry import RegistryClient, RegistryError
from bolt_host.services.sessions import load_secret_key
from bolt_host.services.system_cpu import SystemCpu
from bolt_host.services.tasklogs import format_time
from bolt_host.services.tasks import TaskCancelled, TaskHandle
from bolt_host.services.users import now_iso
from bolt_host.services.versions import compare_versions, max_version, resolve_version, sort_key
from bolt_host.statefile import move_tables_from
from bolt_host.storage import INITIAL_SCHEMA, Database
from bolt_host.web import uploads
from bolt_host.web.auth import (
    Actor,
    actor,
    admin_allowed,
    ask_permission,
    basic_credentials,
    check_login,
    client_key,
    cross_origin_write_allowed,
    host_of,
    refuse_non_system_app,
    require_admin,
    require_app,
    require_caller,
    require_installer,
    require_operator,
    require_system_app,
    require_user,
)
from bolt_host.web.envelope import flag, ok, read_body, require_str
from bolt_host.web.origin import SAFE_METHODS
from bolt_host.web.uploads import (
    ReceivedUpload,
    UploadRefused,
    clean_partial_uploads,
    open_part_file,
    receive_multipart,
    receive_raw,
)

__all__ = [
    "INITIAL_SCHEMA",
    "SAFE_METHODS",
    "Actor",
    "BoltError",
    "CatalogError",
    "Database",
    "ErrorFormat",
    "Event",
    "ExtractError",
    "Host",
    "JournalFile",
    "PluginError",
    "ReceivedUpload",
    "RegistryClient",
    "RegistryError",
    "RegistrySource",
    "SystemCpu",
    "TaskCancelled",
    "TaskHandle",
    "UploadRefused",
    "UploadSource",
    "actor",
    "admin_allowed",
    "app_name_for",
    "ask_permission",
    "basic_credentials",
    "build_app",
    "caller_env_problem",
    "check_login",
    "clean_partial_uploads",
    "client_key",
    "compare_versions",
    "cross_origin_write_allowed",
    "current_trace_id",
    "declared_names",
    "errors",
    "extraction_dir",
    "fits_filesystem",
    "flag",
    "format_time",
    "hookimpl",
    "hookspec",
    "host_of",
    "inside",
    "install_as_task",
    "install_preview",
    "is_firmware",
    "is_port_free",
    "jsondepth",
    "lazy_endpoint",
    "lazy_module",
    "load_secret_key",
    "max_version",
    "move_tables_from",
    "now_iso",
    "ok",
    "open_part_file",
    "pack_directory",
    "read_body",
    "read_json_body",
    "read_manifest",
    "read_tarball_manifest",
    "receive_multipart",
    "receive_raw",
    "refusal",
    "refuse_non_system_app",
    "render_readme",
    "require_admin",
    "require_app",
    "require_caller",
    "require_installer",
    "require_operator",
    "require_str",
    "require_system_app",
    "require_user",
    "resolve_version",
    "retry_after_headers",
    "safe_extract",
    "sort_key",
    "uploads",
]
