"""The agent's download step: stream ``dp.uri`` to a file, with a size cap,
progress callbacks and a hash check.

``dp.download.hash`` is ``{ALGORITHM}:{hex}``.  SHA256 (or SHA512) only: MD5
and SHA1, which Kapua's own examples use, are refused as too weak.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import importlib
import re
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from bolt_host.plugin import lazy_module

if TYPE_CHECKING:
    import httpx
else:  # only an agent downloads: a manager (which needs display_uri and parse_hash) never loads it
    httpx = lazy_module("httpx")

STRONG_HASHES = {"SHA256": "sha256", "SHA-256": "sha256", "SHA512": "sha512", "SHA-512": "sha512"}
WEAK_HASHES = {"MD5", "SHA1", "SHA-1"}
CHUNK = 64 * 1024
KEEPALIVE_SECONDS = 60.0


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context per process: building one (loading the CA bundle) for each download
    was an eighth of a busy agent process's event loop in the 500-device bench."""
    return httpx.create_ssl_context()


_warming = threading.Lock()  # the agents of one process warm in worker threads: one does the work


@functools.cache
def _warm_once() -> None:
    httpx.AsyncHTTPTransport(verify=_tls())  # imports httpcore and h11
    importlib.import_module("anyio._backends._asyncio")  # what the first request would import


def warm() -> None:
    """Load what a download needs (httpx, httpcore, h11, anyio's asyncio backend) and build the TLS
    context now, once per process, instead of in the first download: an agent calls it as it starts.
    The first download paid about 0.12 CPU seconds for it (at load 130: httpx's import 60 ms, the TLS
    context 22 ms, the transport's and anyio's imports 33 ms): a device's first install that much
    later, and each process of 50 simulated agents in the 500-device bench paid it in the burst."""
    with _warming:
        _warm_once()


def new_client() -> httpx.AsyncClient:
    """A download client; an agent keeps one for its life (:meth:`JobRunner.open_client`): building
    one reads every proxy variable of the environment and sets up its transport, about 1 ms of CPU
    that each download paid when it built its own (the 500-device bench, issue 16).  Its connection
    stays open a minute: the manager's next package (a burst of updates) reuses it."""
    return httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=True, verify=_tls(),
                             limits=httpx.Limits(keepalive_expiry=KEEPALIVE_SECONDS))


class DownloadError(Exception):
    """The download failed; the message is safe to show (no credentials)."""


def parse_hash(value: str) -> tuple[str, str]:
    """``("sha256", "<hex>")`` from ``SHA256:<hex>``; ValueError with a reason otherwise."""
    algorithm, sep, digest = value.partition(":")
    algorithm = algorithm.strip().upper()
    digest = digest.strip().lower()
    if not sep:
        raise ValueError("expected ALGORITHM:HEX, e.g. SHA256:<64 hex digits>")
    if algorithm in WEAK_HASHES:
        raise ValueError(f"{algorithm} is too weak to prove a package's integrity; use SHA256")
    if algorithm not in STRONG_HASHES:
        raise ValueError(f"unsupported hash algorithm {algorithm!r}; use SHA256")
    name = STRONG_HASHES[algorithm]
    length = hashlib.new(name).digest_size * 2
    if not re.fullmatch(rf"[0-9a-f]{{{length}}}", digest):
        raise ValueError(f"a {algorithm} hash is {length} hex digits")
    return name, digest


def display_uri(uri: str) -> str:
    """``uri`` without user info or query (which may carry tokens), for logs and records."""
    parts = urlsplit(uri)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


async def fetch(
    uri: str,
    dest: Path,
    *,
    max_bytes: int,
    auth: tuple[str, str] | None = None,
    expected_hash: str | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
    client: httpx.AsyncClient | None = None,
) -> int:
    """Download ``uri`` into ``dest`` and return its size; DownloadError on any failure."""
    if urlsplit(uri).scheme not in ("http", "https"):
        raise DownloadError("only http and https URIs can be downloaded")
    hasher = None
    wanted = None
    if expected_hash:
        try:
            algorithm, wanted = parse_hash(expected_hash)
        except ValueError as exc:
            raise DownloadError(f"bad dp.download.hash: {exc}") from exc
        hasher = hashlib.new(algorithm)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    own_client = client is None
    http = client or new_client()
    received = 0
    try:
        async with http.stream("GET", uri, auth=auth) as response:
            if response.status_code != 200:
                raise DownloadError(f"GET {display_uri(uri)} answered HTTP {response.status_code}")
            declared = response.headers.get("content-length")
            total = int(declared) if declared and declared.isdigit() else None
            if total is not None and total > max_bytes:
                raise DownloadError(f"the package is {total} bytes, over the limit of {max_bytes}")
            with partial.open("wb") as out:
                async for chunk in response.aiter_bytes(CHUNK):
                    received += len(chunk)
                    if received > max_bytes:
                        raise DownloadError(f"the package is over the limit of {max_bytes} bytes")
                    out.write(chunk)
                    if hasher is not None:
                        hasher.update(chunk)
                    if on_progress is not None:
                        on_progress(received, total)
    except httpx.HTTPError as exc:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"GET {display_uri(uri)} failed: {type(exc).__name__}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        if own_client:
            await http.aclose()
    if hasher is not None and wanted is not None and not hmac.compare_digest(hasher.hexdigest(), wanted):
        partial.unlink(missing_ok=True)
        raise DownloadError(
            f"hash mismatch: expected {hasher.name.upper()}:{wanted}, the download is {hasher.hexdigest()}"
        )
    partial.replace(dest)
    return received
