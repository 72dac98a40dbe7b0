"""An async client for the npm registry protocol (any registry: npm-compatible, Verdaccio, ...).

Metadata: ``GET {base}/{name}`` (the *packument*: ``dist-tags``, ``versions``,
``time``, ``readme``), with scoped names sent as ``@scope%2fname``.  Tarballs are
streamed from ``dist.tarball`` (which may live on another host) into the cache
folder with a size cap, and verified against ``dist.integrity`` (SRI; the
strongest algorithm present must match) or, failing that, ``dist.shasum``.  A
version without any integrity data is refused.  The token is only ever sent to
the registry's own origin, and no message carries a credential.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from bolt_host import jsondepth
from bolt_host.lazy import lazy_module
from bolt_host.services.versions import resolve_version, sort_key

if TYPE_CHECKING:
    import httpx
else:
    httpx = lazy_module("httpx")  # imported when first used

MiB = 1024 * 1024
METADATA_MAX_BYTES = 64 * MiB
SEARCH_MAX_SIZE = 250
KINDS = frozenset({"not_configured", "package", "download", "integrity", "readme", "not_found"})
NO_README = "ERROR: No README data found!"  # what npm and Verdaccio store for "no readme"
# SRI algorithms we verify, weakest first.
_STRENGTH = {"sha1": 1, "sha256": 2, "sha384": 3, "sha512": 4}
_NAME = re.compile(r"^(?:@[a-z0-9-][a-z0-9._-]*/)?[a-z0-9-][a-z0-9._-]*$")
_SAFE_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,255}$")
_RESERVED_NAMES = frozenset({"node_modules", "favicon.ico"})

Progress = Callable[[int, int | None], None]


class RegistryError(Exception):
    """A registry operation failed; ``kind`` says which way (one of :data:`KINDS`)."""

    def __init__(self, kind: str, message: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown RegistryError kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.message = message


def valid_package_name(name: object) -> bool:
    """npm's rules for new package names: lowercase, url-safe, optional ``@scope/``, <= 214 chars."""
    if not isinstance(name, str) or not 0 < len(name) <= 214:
        return False
    if name.startswith((".", "_")) or name in _RESERVED_NAMES:
        return False
    if not _NAME.match(name):
        return False
    return not name.split("/")[-1].startswith((".", "_"))


def escape_name(name: str) -> str:
    """The path segment for ``name``: ``@scope/pkg`` becomes ``@scope%2fpkg``."""
    return name.replace("/", "%2f")


def display_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe to show in messages and logs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "<invalid URL>"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without user info, and the (user, password) it carried."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    netloc = parts.netloc.rsplit("@", 1)[1]
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), (user, password)


def _origin(url: str) -> tuple[str, str, int | None]:
    parsed = httpx.URL(url)
    default = {"http": 80, "https": 443}.get(parsed.scheme)
    return parsed.scheme, parsed.host, parsed.port or default


def expected_digest(dist: dict[str, Any]) -> tuple[str, list[bytes]] | None:
    """``(algorithm, digests)`` to check a tarball against, or None without integrity data.

    The strongest SRI algorithm in ``dist.integrity`` wins (any of its digests may
    match, as in SRI); without a usable ``integrity`` the hex sha1 ``shasum`` is used.
    """
    found: dict[str, list[bytes]] = {}
    integrity = dist.get("integrity")
    if isinstance(integrity, str):
        for token in integrity.split():
            alg, sep, rest = token.partition("-")
            if not sep or alg not in _STRENGTH:
                continue
            try:
                digest = base64.b64decode(rest.split("?", 1)[0], validate=True)
            except (binascii.Error, ValueError):
                continue
            if len(digest) == hashlib.new(alg).digest_size:
                found.setdefault(alg, []).append(digest)
    if found:
        best = max(found, key=_STRENGTH.__getitem__)
        return best, found[best]
    shasum = dist.get("shasum")
    if isinstance(shasum, str) and re.fullmatch(r"[0-9a-fA-F]{40}", shasum):
        return "sha1", [bytes.fromhex(shasum)]
    return None


def _matches(digest: bytes, wanted: list[bytes]) -> bool:
    return any(hmac.compare_digest(digest, w) for w in wanted)


def _file_digest(path: Path, alg: str) -> bytes:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, alg).digest()


def _has_keyword(package: dict[str, Any], keyword: str, *, strict: bool) -> bool:
    words = package.get("keywords")
    if not isinstance(words, list):
        return not strict
    return keyword.lower() in {str(w).lower() for w in words}


def remove_partial_downloads(cache_dir: Path) -> int:
    """Delete half-written downloads a killed host left in ``cache_dir``; returns how many."""
    removed = 0
    for leftover in cache_dir.glob(".download-*.part"):
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed


class RegistryClient:
    """Talks to one npm-protocol registry; caches verified tarballs in ``cache_dir``."""

    def __init__(
        self,
        base_url: str,
        cache_dir: Path,
        *,
        max_bytes: int,
        timeout: float = 30.0,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._base: str | None = None
        self._basic: tuple[str, str] | None = None  # user info from the URL, sent as Basic auth
        self._config_error: str | None = None
        base = (base_url or "").strip().rstrip("/")
        if not base:
            self._config_error = "no package registry is configured"
        elif urlsplit(base).scheme not in ("http", "https") or not urlsplit(base).hostname:
            self._config_error = f"the registry URL {display_url(base)!r} is not an http(s) URL"
        else:
            self._base, self._basic = _split_credentials(base)
        self._cache_dir = Path(cache_dir)
        self._max_bytes = max_bytes
        self._token = token or None
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout),
            follow_redirects=True,
            headers={"User-Agent": "bolt-host"},
        )

    # ------------------------------------------------------------ plumbing

    @property
    def base_url(self) -> str | None:
        """The registry URL without credentials (None when not configured)."""
        return display_url(self._base) if self._base else None

    def npm_credentials(self) -> str | None:
        """The registry's credentials as ``.npmrc`` lines scoped to it (npm's ``//host/path/:``
        form, so npm sends them to this registry only), or None when it has none."""
        if self._base is None or not (self._token or self._basic):
            return None
        parts = urlsplit(self._base)
        scope = "//" + parts.netloc + parts.path.rstrip("/") + "/:"
        if self._token:
            return f"{scope}_authToken={self._token}\n"
        assert self._basic is not None
        pair = f"{self._basic[0]}:{self._basic[1]}".encode()
        return f"{scope}_auth={base64.b64encode(pair).decode()}\n"

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def _require_base(self) -> str:
        if self._base is None:
            raise RegistryError("not_configured", self._config_error or "no package registry is configured")
        return self._base

    def _redact(self, text: str) -> str:
        secrets = [self._token, self._basic[1] if self._basic else None]
        for secret in secrets:
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    def _error(self, kind: str, message: str) -> RegistryError:
        return RegistryError(kind, self._redact(message))

    def _headers(self, url: str, accept: str) -> dict[str, str]:
        headers = {"Accept": accept}
        if not self._base or _origin(url) != _origin(self._base):
            return headers
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        elif self._basic:
            pair = f"{self._basic[0]}:{self._basic[1]}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        return headers

    def _check_name(self, name: object) -> str:
        if not valid_package_name(name):
            raise self._error("package", f"{str(name)[:100]!r} is not a valid npm package name")
        return str(name)

    async def _get_json(
        self, url: str, what: str, *, params: dict[str, str] | None = None, missing: str = "not_found"
    ) -> Any:
        shown = display_url(url)
        try:
            async with self._client.stream(
                "GET", url, params=params, headers=self._headers(url, "application/json")
            ) as resp:
                if resp.status_code == 404:
                    raise self._error(missing, f"{what} was not found at {shown}")
                if resp.status_code in (401, 403):
                    raise self._error(
                        "package", f"the registry refused access to {what} (HTTP {resp.status_code}); check the token"
                    )
                if resp.status_code != 200:
                    raise self._error("package", f"the registry answered HTTP {resp.status_code} for {what}")
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > METADATA_MAX_BYTES:
                        raise self._error("package", f"the registry's answer for {what} is larger than allowed")
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise self._error(
                "package", f"could not reach the registry at {shown} for {what}: {_describe(exc)}"
            ) from None
        try:
            return jsondepth.loads(body)
        except ValueError:
            raise self._error("package", f"the registry sent invalid JSON for {what}") from None

    # ------------------------------------------------------------ metadata

    async def packument(self, name: str) -> dict[str, Any]:
        """The registry's whole document for ``name``."""
        base = self._require_base()
        name = self._check_name(name)
        doc = await self._get_json(f"{base}/{escape_name(name)}", f"package {name}")
        if not isinstance(doc, dict) or not isinstance(doc.get("versions", {}), dict):
            raise self._error("package", f"the registry's document for {name} is not a package document")
        return doc

    def _resolve(self, doc: dict[str, Any], name: str, version: str | None) -> dict[str, Any]:
        versions = doc.get("versions") or {}
        tags = doc.get("dist-tags")
        tags = tags if isinstance(tags, dict) else {}
        resolved = resolve_version(version, versions, tags)
        meta = versions.get(resolved) if isinstance(resolved, str) else None
        if not isinstance(meta, dict):
            available = sorted(versions, key=sort_key)
            listed = ", ".join(available[-20:]) or "none"
            if len(available) > 20:
                listed = "..., " + listed
            asked = "the latest version" if version is None else f"version {version!r}"
            raise self._error("not_found", f"{asked} of {name} does not exist (available: {listed})")
        meta = dict(meta)
        if meta.setdefault("name", name) != name or meta.setdefault("version", resolved) != resolved:
            raise self._error("package", f"the registry's manifest for {name}@{resolved} names another package")
        return meta

    async def manifest(self, name: str, version: str | None = None) -> dict[str, Any]:
        """The document of one version (package.json fields plus ``dist``).

        ``version`` None means ``dist-tags.latest``; a dist-tag or an npm range (``^6``,
        ``~6.0``, ``>=5 <7``) is resolved as npm resolves it.
        """
        doc = await self.packument(name)
        return self._resolve(doc, name, version)

    async def readme(self, name: str, version: str | None = None) -> str:
        doc = await self.packument(name)
        meta = self._resolve(doc, name, version)
        texts = [doc.get("readme"), meta.get("readme")]
        if version is not None:
            texts.reverse()  # the version's own readme first, the packument's (latest) as fallback
        for text in texts:
            if isinstance(text, str) and text.strip() and text.strip() != NO_README:
                return text
        raise self._error("readme", f"{name}@{meta['version']} has no readme in the registry")

    async def search(self, text: str, size: int = SEARCH_MAX_SIZE) -> list[dict[str, Any]]:
        """``/-/v1/search``: the ``package`` objects of the results."""
        base = self._require_base()
        params = {"text": text, "size": str(max(1, min(int(size), SEARCH_MAX_SIZE)))}
        data = await self._get_json(f"{base}/-/v1/search", f"search {text!r}", params=params, missing="package")
        objects = data.get("objects") if isinstance(data, dict) else None
        if not isinstance(objects, list):
            raise self._error("package", f"the registry's answer to search {text!r} has no result list")
        return [o["package"] for o in objects if isinstance(o, dict) and isinstance(o.get("package"), dict)]

    async def search_keyword(self, keyword: str, size: int = SEARCH_MAX_SIZE) -> list[dict[str, Any]]:
        """Packages carrying ``keyword``, also on registries whose search ignores ``keywords:``.

        Verdaccio's search only matches names and descriptions, so when
        ``keywords:<keyword>`` finds nothing the registry's whole search listing
        (empty text) is filtered here instead.
        """
        found = await self.search(f"keywords:{keyword}", size)
        hits = [p for p in found if _has_keyword(p, keyword, strict=False)]
        if hits:
            return hits
        try:
            listing = await self.search("", size)
        except RegistryError:
            return []
        return [p for p in listing if _has_keyword(p, keyword, strict=True)]

    # ------------------------------------------------------------ tarballs

    def _cache_path(self, name: str, version: str) -> Path:
        if not _SAFE_VERSION.match(version):
            raise self._error("package", f"{name} has an unsafe version string {version[:100]!r}")
        return self._cache_dir / f"{name.replace('/', '+')}@{version}.tgz"

    async def download(self, name: str, version: str, progress: Progress | None = None) -> Path:
        """Download and verify the tarball of ``name@version``; return its path in the cache."""
        meta = await self.manifest(name, version)
        resolved = meta["version"]
        what = f"{name}@{resolved}"
        dist = meta.get("dist")
        if not isinstance(dist, dict):
            raise self._error("package", f"the registry has no download information (dist) for {what}")
        expected = expected_digest(dist)
        if expected is None:
            raise self._error(
                "integrity", f"{what} has no integrity data (dist.integrity or dist.shasum); it is not installed"
            )
        url = dist.get("tarball")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            raise self._error("download", f"the tarball URL of {what} is not an http(s) URL")
        target = self._cache_path(name, resolved)
        if await self._cached_ok(target, expected):
            return target
        await self._fetch(url, target, expected, what, progress)
        return target

    async def _cached_ok(self, target: Path, expected: tuple[str, list[bytes]]) -> bool:
        try:
            if not target.is_file() or target.is_symlink() or target.stat().st_size > self._max_bytes:
                target.unlink(missing_ok=True)
                return False
            digest = await asyncio.to_thread(_file_digest, target, expected[0])
        except OSError:
            return False
        if _matches(digest, expected[1]):
            return True
        target.unlink(missing_ok=True)
        return False

    async def _fetch(
        self, url: str, target: Path, expected: tuple[str, list[bytes]], what: str, progress: Progress | None
    ) -> None:
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".download-", suffix=".part", dir=self._cache_dir)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                digest = await self._stream_to(url, out, expected[0], what, progress)
            if not _matches(digest, expected[1]):
                raise self._error(
                    "integrity", f"the tarball of {what} does not match the registry's {expected[0]} integrity"
                )
            os.replace(tmp, target)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise self._error(
                "download", f"could not download {what} from {display_url(url)}: {_describe(exc)}"
            ) from None
        except OSError as exc:
            raise self._error("download", f"could not store {what} in the cache: {exc.strerror or exc}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    async def _stream_to(self, url: str, out: Any, alg: str, what: str, progress: Progress | None) -> bytes:
        hasher = hashlib.new(alg)
        limit = self._max_bytes
        async with self._client.stream("GET", url, headers=self._headers(url, "application/octet-stream")) as resp:
            if resp.status_code != 200:
                raise self._error(
                    "download", f"the registry answered HTTP {resp.status_code} for the tarball of {what}"
                )
            total = _content_length(resp)
            if total is not None and total > limit:
                raise self._error("download", f"the tarball of {what} is {total} bytes, more than the limit of {limit}")
            received = 0
            async for chunk in resp.aiter_bytes():
                received += len(chunk)
                if received > limit:
                    raise self._error("download", f"the tarball of {what} is larger than the limit of {limit} bytes")
                out.write(chunk)
                hasher.update(chunk)
                if progress is not None:
                    progress(received, total)
        return hasher.digest()


def _content_length(resp: httpx.Response) -> int | None:
    if resp.headers.get("content-encoding", "identity") not in ("", "identity"):
        return None  # the header counts encoded bytes
    try:
        value = int(resp.headers["content-length"])
    except (KeyError, ValueError):
        return None
    return value if value >= 0 else None


def _describe(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
