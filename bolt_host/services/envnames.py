"""Which environment variables callers may set for an app.

Callers (the market's ``envs``, an admin) may set only the names the app's manifest declares
(``bolt.env`` keys, or the market's ``bolt.envs`` list).  Some names are refused whoever asks
and whatever the manifest says: they change how the dynamic loader, a shell, an interpreter
or every HTTP client in the app behaves, so whoever sets them runs code in the app or reads
its traffic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

_SHELL = {"BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS4", "IFS", "CDPATH", "GLOBIGNORE", "PROMPT_COMMAND"}
_INTERPRETER = {"NODE_OPTIONS", "NODE_PATH", "PERL5OPT", "PERL5LIB", "RUBYOPT", "RUBYLIB", "JAVA_TOOL_OPTIONS"}
_PROXY = {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy"}  # any case
_PREFIXES = {"LD_": "the dynamic loader", "DYLD_": "the dynamic loader", "PYTHON": "Python"}


def refusal(name: str) -> str | None:
    """Why ``name`` is never set by callers, or None when it may be."""
    upper = name.upper()
    for prefix, what in _PREFIXES.items():
        if upper.startswith(prefix):
            return f"{name} changes how {what} runs the app's code"
    if name in _SHELL:
        return f"{name} makes a shell run code"
    if name in _INTERPRETER:
        return f"{name} changes how an interpreter loads the app's code"
    if name.lower() in _PROXY:
        return f"{name} would route the app's HTTP traffic through another server"
    return None


def declared_names(bolt: Mapping[str, Any]) -> set[str]:
    """The names a manifest's ``bolt`` block declares: ``env`` keys and ``envs[].envName``."""
    env, envs = bolt.get("env"), bolt.get("envs")
    names = {str(key) for key in env} if isinstance(env, Mapping) else set()
    for item in envs if isinstance(envs, list) else []:
        if isinstance(item, Mapping):
            name = item.get("envName") or item.get("env_name")
            if isinstance(name, str):
                names.add(name)
    return names


def caller_env_problem(names: Iterable[str], declared: set[str]) -> str | None:
    """What is wrong with a caller setting ``names`` (the first problem), or None."""
    for name in names:
        why = refusal(name)
        if why is not None:
            return f"The env {name} cannot be set: {why}"
        if name not in declared:
            shown = ", ".join(sorted(declared)) or "none"
            return f"The env {name} is not declared by the app's manifest (bolt.env / bolt.envs: {shown})"
    return None


SECTION = "admin-env"  # of the host's state file (runtime.json, 0600): values may be secrets


class AdminEnv:
    """Values an admin set for an app's declared env names (``PUT /api/apps/<name>`` ``env``).

    Kept in the host's state file, not the app object, so the values never travel with the
    app in API answers or events; they last across upgrades and go with a delete."""

    def __init__(self, state: Any) -> None:
        self._state = state

    def values(self, name: str) -> dict[str, str]:
        row = self._state.get(SECTION, name)
        return dict(row["env"]) if row is not None else {}

    def names(self, name: str) -> list[str]:
        return sorted(self.values(name))

    async def change(self, name: str, changes: Mapping[str, str | None]) -> None:
        """Set values (``None`` removes one) and wait until they are on disk."""
        values = self.values(name)
        for key, value in changes.items():
            if value is None:
                values.pop(key, None)
            else:
                values[key] = value
        if values:
            self._state.put(SECTION, name, {"name": name, "env": values})
        else:
            self._state.delete(SECTION, name)
        await self._state.commit()

    def forget(self, name: str) -> None:
        if self._state.delete(SECTION, name):
            self._state.commit_soon()
