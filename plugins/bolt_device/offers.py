"""Packages the manager serves to its devices: tarballs of its own installed apps.

An app installed on the manager from a local folder or an upload has no registry
URL a device could download it from.  To install it on a device, the manager packs
the installed folder npm-style (files under ``package/``; symlinks, ``node_modules``
and ``.git`` skipped; capped at the host's download limit) into
``<data-dir>/cache/device-offers/``, and offers it at ``/v1/device-packages/<id>``
with its SHA256.  The offer's id and a random password travel to the device in its
download request (HTTP Basic on the URL, never stored or echoed); an offer expires
after :data:`OFFER_SECONDS`, and its file goes with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from bolt_host.plugin import pack_directory

OFFER_SECONDS = 30 * 60
ROUTE = "/v1/device-packages"


class OfferError(Exception):
    """The folder cannot be offered (too big, unreadable); the message says why."""


@dataclass(frozen=True)
class Offer:
    id: str
    path: Path
    sha256: str
    size: int
    password_digest: str
    expires: float


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _sha256_of(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(1024 * 1024):
            hasher.update(chunk)
    return hasher.hexdigest()


class PackageOffers:
    def __init__(self, folder: Path, max_bytes: int, seconds: float = OFFER_SECONDS) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.seconds = seconds
        self._offers: dict[str, Offer] = {}
        shutil.rmtree(folder, ignore_errors=True)  # offers of an earlier run are void
        folder.mkdir(parents=True, exist_ok=True)

    async def offer(self, app_dir: Path) -> tuple[Offer, str]:
        """Pack ``app_dir`` and offer it; returns the offer and its password."""
        self.prune()
        offer_id = secrets.token_urlsafe(16)
        password = secrets.token_urlsafe(24)
        path = self.folder / f"{offer_id}.tgz"
        try:
            await asyncio.to_thread(pack_directory, app_dir, path)
            size = path.stat().st_size
            if size > self.max_bytes:
                raise OfferError(f"the package is {size} bytes, over the download limit of {self.max_bytes}")
            sha256 = await asyncio.to_thread(_sha256_of, path)
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise OfferError(f"the installed app could not be packed: {exc.strerror or exc}") from exc
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        offer = Offer(offer_id, path, sha256, size, _digest(password), time.monotonic() + self.seconds)
        self._offers[offer_id] = offer
        return offer, password

    def get(self, offer_id: str, username: str, password: str) -> Offer | None:
        """The live offer these Basic credentials open, or None."""
        self.prune()
        offer = self._offers.get(offer_id)
        if offer is None or not hmac.compare_digest(username, offer_id):
            return None
        if not hmac.compare_digest(_digest(password), offer.password_digest):
            return None
        return offer

    def prune(self) -> None:
        now = time.monotonic()
        for offer in [o for o in self._offers.values() if o.expires <= now]:
            self._drop(offer)

    def close(self) -> None:
        for offer in list(self._offers.values()):
            self._drop(offer)

    def _drop(self, offer: Offer) -> None:
        self._offers.pop(offer.id, None)
        with contextlib.suppress(OSError):
            offer.path.unlink(missing_ok=True)
