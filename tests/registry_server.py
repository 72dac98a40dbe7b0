"""A real npm-protocol registry for tests: a Starlette app served by uvicorn in a thread.

Usage::

    with RegistryServer() as registry:            # binds 127.0.0.1 on an ephemeral port
        registry.publish_dir(Path("node_modules_sample/hello-web"))
        client = RegistryClient(registry.url, cache, max_bytes=10 * 2**20)

or as a fixture::

    @pytest.fixture
    def registry():
        with RegistryServer() as server:
            yield server

It serves packuments (``dist-tags``, ``versions``, ``time``, ``readme``), tarballs
at ``/<name>/-/<base>-<version>.tgz`` with real ``dist.integrity`` (sha512) and
``shasum``, ``/-/v1/search`` (``keywords:a,b`` qualifiers and plain words), and
``/-/ping``.  Scoped names work both as ``@scope%2fname`` and ``@scope/name``.
Start and stop wait on events with deadlines, never on fixed sleeps.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bolt_host.services.extract import SKIP_DIRS, pack_directory
from bolt_host.services.versions import sort_key


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def integrity_of(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


@dataclass
class _Package:
    name: str
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    time: dict[str, str] = field(default_factory=dict)
    readme: str | None = None


class _Uvicorn(uvicorn.Server):
    """uvicorn.Server that signals when start-up finished (or failed)."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: Any = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.ready.set()


class RegistryServer:
    def __init__(self, *, start_timeout: float = 10.0, stop_timeout: float = 10.0) -> None:
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.requests = 0
        self.paths: list[str] = []  # decoded request paths, in order
        self.raw_paths: list[str] = []  # as sent (``@scope%2fname`` stays encoded)
        self.authorizations: list[str | None] = []  # the Authorization header of each request
        self._overrides: dict[str, tuple[int, bytes, dict[str, str]]] = {}
        self._lock = threading.Lock()
        self._packages: dict[str, _Package] = {}
        self._down = False
        self._chunked = False
        self._keyword_search = True
        self._port: int | None = None
        self._server: _Uvicorn | None = None
        self._thread: threading.Thread | None = None
        self._app = Starlette(
            routes=[
                Route("/-/ping", self._ping),
                Route("/-/v1/search", self._search),
                Route("/{path:path}", self._dispatch),
            ]
        )

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> RegistryServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the registry server is already running")
        ready = threading.Event()
        config = uvicorn.Config(
            self._asgi,
            host="127.0.0.1",
            port=0,
            lifespan="off",
            log_level="warning",
            access_log=False,
            interface="asgi3",
            loop="asyncio",
            http="h11",
            ws="none",
            timeout_graceful_shutdown=2,
        )
        self._server = _Uvicorn(config, ready)
        self._thread = threading.Thread(target=self._server.run, name="registry-server", daemon=True)
        self._thread.start()
        if not ready.wait(self.start_timeout) or not self._server.started:
            self._server.should_exit = True
            self._thread.join(self.stop_timeout)
            self._thread = None
            raise RuntimeError(f"the registry test server did not start within {self.start_timeout} s")
        self._port = self._server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(self.stop_timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(self.stop_timeout)
        self._thread = self._server = None
        if thread.is_alive():
            raise RuntimeError(f"the registry test server did not stop within {2 * self.stop_timeout} s")

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("the registry server is not running")
        return f"http://127.0.0.1:{self._port}"

    # ------------------------------------------------------------ knobs

    def set_down(self, down: bool = True) -> None:
        """While down, every request answers 503."""
        self._down = down

    def set_response(self, path: str, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        """Answer requests for the decoded ``path`` with a fixed response (malformed answers, errors)."""
        with self._lock:
            self._overrides[path] = (status, body, dict(headers or {}))

    def set_keyword_search(self, enabled: bool) -> None:
        """Disabled, search behaves like Verdaccio's: ``keywords:`` is not understood, only names and
        descriptions match, and an empty text lists everything."""
        self._keyword_search = enabled

    def set_chunked(self, chunked: bool = True) -> None:
        """Serve tarballs without Content-Length (chunked), so a client must count bytes itself."""
        self._chunked = chunked

    # ------------------------------------------------------------ publishing

    def publish_dir(
        self,
        path: Path,
        version: str | None = None,
        tamper: bool = False,
        extra_manifest: dict[str, Any] | None = None,
        *,
        tag: str | None = "latest",
    ) -> dict[str, Any]:
        """Pack ``path`` (npm style) and publish it; return the version document.

        ``version`` overrides package.json's version (inside the tarball too);
        ``extra_manifest`` is merged into the version document (a ``dist`` key is
        merged into ``dist``, a None value there removes the key); ``tamper`` serves
        other bytes than the integrity describes.
        """
        path = Path(path)
        manifest = json.loads((path / "package.json").read_text())
        if version is not None:
            manifest["version"] = version
        with tempfile.TemporaryDirectory(prefix="registry-pack-") as tmp:
            copy = Path(tmp) / "src"
            shutil.copytree(path, copy, ignore=shutil.ignore_patterns(*SKIP_DIRS), symlinks=True)
            (copy / "package.json").write_text(json.dumps(manifest, indent=2))
            data = pack_directory(copy, Path(tmp) / "package.tgz").read_bytes()
        readme = next((p.read_text() for p in sorted(path.glob("*")) if p.name.lower() == "readme.md"), None)
        manifest.update(extra_manifest or {})
        return self.publish_tarball(
            manifest["name"], manifest["version"], data, manifest, tamper=tamper, tag=tag, readme=readme
        )

    def publish_tree(self, folder: Path) -> list[dict[str, Any]]:
        """Publish every sub-folder of ``folder`` that holds a package.json (e.g. node_modules_sample)."""
        return [self.publish_dir(p) for p in sorted(Path(folder).iterdir()) if (p / "package.json").is_file()]

    def publish_tarball(
        self,
        name: str,
        version: str,
        data: bytes,
        manifest: dict[str, Any] | None = None,
        *,
        tamper: bool = False,
        tag: str | None = "latest",
        readme: str | None = None,
    ) -> dict[str, Any]:
        """Publish raw tarball bytes (e.g. a hostile archive) as ``name@version``."""
        doc = dict(manifest or {})
        doc.update(name=name, version=version, _id=f"{name}@{version}")
        filename = f"{name.split('/')[-1]}-{version}.tgz"
        dist: dict[str, Any] = {
            "tarball": f"/{name}/-/{filename}",
            "integrity": integrity_of(data),
            "shasum": hashlib.sha1(data).hexdigest(),
        }
        for key, value in (doc.pop("dist", None) or {}).items():
            if value is None:
                dist.pop(key, None)
            else:
                dist[key] = value
        doc["dist"] = dist
        served = bytes(data[:-1] + bytes([data[-1] ^ 0xFF])) if tamper and data else data
        with self._lock:
            pkg = self._packages.setdefault(name, _Package(name))
            pkg.versions[version] = doc
            pkg.files[filename] = served
            now = _now()
            pkg.time.setdefault("created", now)
            pkg.time.update({"modified": now, version: now})
            if tag:
                pkg.tags[tag] = version
            if readme is not None and (tag == "latest" or pkg.readme is None):
                pkg.readme = readme
        return self._render(doc)

    # ------------------------------------------------------------ documents

    def _render(self, doc: dict[str, Any]) -> dict[str, Any]:
        doc = json.loads(json.dumps(doc))
        tarball = doc.get("dist", {}).get("tarball")
        if isinstance(tarball, str) and tarball.startswith("/") and self._port is not None:
            doc["dist"]["tarball"] = self.url + tarball
        return doc

    def packument(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            pkg = self._packages.get(name)
            if pkg is None:
                return None
            doc: dict[str, Any] = {
                "_id": name,
                "name": name,
                "dist-tags": dict(pkg.tags),
                "versions": {v: self._render(d) for v, d in pkg.versions.items()},
                "time": dict(pkg.time),
            }
            if pkg.readme is not None:
                doc["readme"] = pkg.readme
            latest = pkg.versions.get(pkg.tags.get("latest", ""))
            if latest and "description" in latest:
                doc["description"] = latest["description"]
            return doc

    def _search_entry(self, pkg: _Package) -> dict[str, Any] | None:
        version = pkg.tags.get("latest") or max(pkg.versions, key=sort_key, default=None)
        doc = pkg.versions.get(version or "")
        if doc is None:
            return None
        scope = pkg.name[1:].split("/")[0] if pkg.name.startswith("@") else "unscoped"
        return {
            "name": pkg.name,
            "scope": scope,
            "version": version,
            "description": doc.get("description", ""),
            "keywords": list(doc.get("keywords") or []),
            "date": pkg.time.get(version or "", pkg.time.get("modified")),
            "links": {},
            "publisher": {"username": "test"},
            "maintainers": [{"username": "test"}],
        }

    # ------------------------------------------------------------ ASGI

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = dict(scope.get("headers") or [])
        with self._lock:
            self.requests += 1
            self.paths.append(scope["path"])
            self.raw_paths.append(bytes(scope.get("raw_path") or scope["path"].encode()).decode("latin-1"))
            auth = headers.get(b"authorization")
            self.authorizations.append(auth.decode("latin-1") if auth is not None else None)
            override = self._overrides.get(scope["path"])
        if self._down:
            await JSONResponse({"error": "registry is down for the test"}, status_code=503)(scope, receive, send)
            return
        if override is not None:
            status, body, extra = override
            await Response(body, status_code=status, headers=extra)(scope, receive, send)
            return
        await self._app(scope, receive, send)

    async def _ping(self, request: Request) -> Response:
        return JSONResponse({})

    async def _dispatch(self, request: Request) -> Response:
        path = request.path_params["path"]
        if "/-/" in path:
            name, _, filename = path.partition("/-/")
            with self._lock:
                pkg = self._packages.get(name)
                data = pkg.files.get(filename) if pkg else None
            if data is None:
                return JSONResponse({"error": "not found"}, status_code=404)
            if self._chunked:
                return StreamingResponse(_chunks(data), media_type="application/octet-stream")
            return Response(data, media_type="application/octet-stream")
        doc = self.packument(path)
        if doc is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse(doc)

    async def _search(self, request: Request) -> Response:
        text = request.query_params.get("text", "")
        size = _int(request.query_params.get("size"), 20, 250)
        start = _int(request.query_params.get("from"), 0, 10_000)
        with self._lock:
            entries = [e for p in self._packages.values() if (e := self._search_entry(p))]
        hits = [e for e in sorted(entries, key=lambda e: e["name"]) if _matches(e, text, self._keyword_search)]
        page = hits[start : start + size]
        objects = [
            {"package": e, "score": {"final": 1.0, "detail": {"quality": 1.0}}, "searchScore": 1.0} for e in page
        ]
        return JSONResponse({"objects": objects, "total": len(hits), "time": _now()})


def _matches(entry: dict[str, Any], text: str, keyword_search: bool) -> bool:
    keywords = {k.lower() for k in entry["keywords"]} if keyword_search else set()
    for token in text.lower().split():
        if keyword_search and token.startswith("keywords:"):
            if not keywords & set(token[len("keywords:") :].split(",")):
                return False
        elif not any(token in s for s in (entry["name"], entry["description"].lower(), *keywords)):
            return False
    return True


def _int(value: str | None, default: int, high: int) -> int:
    try:
        return max(0, min(int(value or default), high))
    except ValueError:
        return default


async def _chunks(data: bytes, size: int = 16 * 1024):
    for i in range(0, len(data), size):
        yield data[i : i + size]
