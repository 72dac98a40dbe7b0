"""The machine's pip index configuration, handed to uv as ``UV_*`` variables.

uv reads its own ``uv.toml`` and ``UV_*`` variables but not ``pip.conf``.  An admin whose
machine installs from a mirror, a wheelhouse or a constraint file set that up for pip, so
an app's dependencies must come from the same places.  pip's own precedence is followed:
site-wide files (``$XDG_CONFIG_DIRS/pip/pip.conf``, ``/etc/pip.conf``), then the user's
(``~/.pip/pip.conf``, ``~/.config/pip/pip.conf``), then ``$PIP_CONFIG_FILE``, then
``PIP_*`` variables; within a file ``[install]`` overrides ``[global]``.  ``UV_*`` variables
already set win over all of it (they are uv's own configuration).
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from pathlib import Path

# pip option (its values separated by whitespace) -> (uv variable, how uv wants several joined)
TRANSLATIONS: dict[str, tuple[str, str]] = {
    "index-url": ("UV_DEFAULT_INDEX", " "),
    "extra-index-url": ("UV_INDEX", " "),
    "find-links": ("UV_FIND_LINKS", ","),
    "constraint": ("UV_CONSTRAINT", " "),
    "trusted-host": ("UV_INSECURE_HOST", " "),
    "no-index": ("", " "),
    "timeout": ("UV_HTTP_TIMEOUT", " "),
    "default-timeout": ("UV_HTTP_TIMEOUT", " "),
    "cert": ("SSL_CERT_FILE", " "),
}
SECTIONS = ("global", "install")
NO_INDEX = "UV_NO_INDEX"  # also honoured when set in the host's environment


def config_files(environ: Mapping[str, str]) -> list[Path]:
    """pip's configuration files in the order pip loads them (later ones win)."""
    if environ.get("PIP_CONFIG_FILE") == os.devnull:
        return []
    xdg_dirs = environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    files = [Path(folder) / "pip" / "pip.conf" for folder in xdg_dirs.split(os.pathsep) if folder]
    files.append(Path("/etc/pip.conf"))
    home = Path(environ.get("HOME") or Path.home())
    files.append(home / ".pip" / "pip.conf")
    files.append(Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "pip" / "pip.conf")
    if environ.get("PIP_CONFIG_FILE"):
        files.append(Path(environ["PIP_CONFIG_FILE"]))
    return files


def pip_options(environ: Mapping[str, str], files: list[Path] | None = None) -> dict[str, list[str]]:
    """The index-related options pip would use on this machine, each as a list of values."""
    options: dict[str, list[str]] = {}
    for path in config_files(environ) if files is None else files:
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (OSError, configparser.Error, UnicodeDecodeError):
            continue  # pip would refuse a broken file; the install then runs on uv's defaults
        for section in SECTIONS:
            if parser.has_section(section):
                for key, value in parser.items(section):
                    if key in TRANSLATIONS:
                        options[key] = value.split()
    for key in TRANSLATIONS:
        from_env = environ.get("PIP_" + key.upper().replace("-", "_"))
        if from_env is not None:
            options[key] = from_env.split()
    return options


def uv_environment(environ: Mapping[str, str] | None = None, files: list[Path] | None = None) -> dict[str, str]:
    """``UV_*`` (and ``SSL_CERT_FILE``) variables equivalent to pip's index configuration
    (``files``: pip's configuration files, by default this machine's), with the ``UV_*``
    variables already in ``environ`` taking precedence."""
    environ = os.environ if environ is None else environ
    options = pip_options(environ, files)
    translated: dict[str, str] = {}
    if options.pop("no-index", ["no"])[0].lower() in ("1", "true", "yes", "on"):
        # pip then ignores every index; uv's --no-index would still read the UV_INDEX ones.
        # uv has no variable for it: the caller turns NO_INDEX into the flag.
        translated[NO_INDEX] = "1"
        options.pop("index-url", None)
        options.pop("extra-index-url", None)
    for key, values in options.items():
        variable, separator = TRANSLATIONS[key]
        if values:
            translated[variable] = separator.join(values)
    if "UV_INDEX" in translated:
        # pip picks the best match across all its indexes; uv's default stops at the first
        # index that has the package, which would hide the mirror's newer releases.
        translated["UV_INDEX_STRATEGY"] = "unsafe-best-match"
    translated.update({key: value for key, value in environ.items() if key.startswith("UV_")})
    if translated.get(NO_INDEX, "").lower() not in ("1", "true", "yes", "on"):
        translated.pop(NO_INDEX, None)
    return translated
