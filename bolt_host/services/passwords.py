"""Password hashing with scrypt (memory-hard, in the standard library).

Each scrypt run allocates 16 MiB (128 * r * n bytes).  glibc serves the second and
later runs from the heap (its mmap threshold grows after the first) and keeps the
pages after they are freed, so one login left the host 16 MiB bigger for good;
:func:`_scrypt` hands them back with ``malloc_trim``.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import functools
import hashlib
import hmac
import secrets

_N, _R, _P = 2**14, 8, 1
_DUMMY = None


@functools.cache
def _malloc_trim() -> object | None:
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    return getattr(libc, "malloc_trim", None)  # glibc only


def _scrypt(password: bytes, *, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    try:
        return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=dklen)
    finally:
        trim = _malloc_trim()
        if trim is not None:
            trim(0)  # type: ignore[operator]


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str | None) -> bool:
    """Constant-time check; an absent hash still costs one scrypt run (no timing oracle)."""
    global _DUMMY
    if not stored:
        _DUMMY = _DUMMY or hash_password(secrets.token_hex(8))
        stored, valid = _DUMMY, False
    else:
        valid = True
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest_b64)
        actual = _scrypt(
            password.encode(),
            salt=base64.b64decode(salt_b64),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected) and valid
