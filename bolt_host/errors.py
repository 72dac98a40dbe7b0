"""Bolt's response codes and the one exception type that carries them.

Services raise :class:`BoltError` with a Bolt code; the web layer turns it into
the envelope and picks the HTTP status from :data:`HTTP_STATUS`.

Codes below 1000 are Bolt's own table and mean what they mean in Bolt.  Codes
bolt-host adds sit in the extension range 1100-1199, so a client that compares
code ranges, as Bolt's book advises, never mistakes one of them for a Bolt code.
"""

from __future__ import annotations

from typing import Any

OK = 0
UNKNOWN = 1000
ENDPOINT_MISSING = 100
ENDPOINT_NOT_FOUND = 103
APP_TOKEN_MISSING = 110
APP_TOKEN_UNKNOWN = 113
BULK_DELETE_CRITERIA = 120
BULK_UPDATE_CRITERIA = 130
CREDENTIALS_MISSING = 200
USER_EXISTS = 201
USER_SAVE_FAILED = 202
USER_NOT_FOUND = 203
LOGIN_FAILED = 212
NOT_LOGGED_IN = 213
ROLE_NAME_MISSING = 300
ROLE_EXISTS = 301
ROLE_NOT_FOUND = 303
NO_START_RIGHT = 334
NO_ADMIN_RIGHT = 337
PERMISSION_NAME_MISSING = 350
APP_NAME_MISSING = 400
APP_NAME_TAKEN = 401
APP_SAVE_FAILED = 402
APP_NOT_FOUND = 403
APP_INTEGRITY_FAILED = 404
APP_NAME_INVALID = 405
COLLECTION_NAME_INVALID = 406
APP_PATH_MISSING = 410
TARGET_UNSUPPORTED = 414
DOWNLOAD_FAILED = 415
REGISTRY_PACKAGE_FAILED = 416
REGISTRY_README_FAILED = 417
LOCAL_PACKAGE_FAILED = 418
LOCAL_README_FAILED = 419
APP_NOT_RUNNING = 420
NOT_SYSTEM_APP = 504
DB_QUERY_MISSING = 710

# bolt-host extensions (1100-1199); not in Bolt's table.
EXTENSION_CODES = range(1100, 1200)
STORAGE_FULL = 1100  # the data dir's disk is full
BAD_REQUEST = 1101  # the request body or query is malformed or has a wrong type
RATE_LIMITED = 1102  # too many attempts (failed logins); see Retry-After
PAYLOAD_TOO_LARGE = 1103  # request body over the cap
CSRF_FAILED = 1104  # a cookie-authenticated write refused by the cross-origin check (web/origin.py)
APP_START_FAILED = 1105  # the app's process did not start or never became ready
APP_STOP_FAILED = 1106  # the app's process could not be stopped
EVENT_NAME_RESERVED = 1107  # an app tried to publish one of the host's event names
HOST_NOT_ALLOWED = 1108  # the request's Host header names no host this server answers for
APP_BAD_GATEWAY = 1120  # the proxy got no valid HTTP answer from the app's server
APP_GATEWAY_TIMEOUT = 1121  # the app's server did not answer the proxy in time

MESSAGES: dict[int, str] = {
    OK: "OK",
    UNKNOWN: "Unknown error",
    ENDPOINT_MISSING: "Endpoint not specified",
    ENDPOINT_NOT_FOUND: "Could not find specified endpoint",
    BAD_REQUEST: "The request body or query is not valid",
    APP_TOKEN_MISSING: "'X-Bolt-App-Token' header missing",
    APP_TOKEN_UNKNOWN: "Could not retrieve the specified 'X-Bolt-App-Token' value",
    BULK_DELETE_CRITERIA: "Bulk delete criterion missing",
    BULK_UPDATE_CRITERIA: "Bulk update criterion missing",
    CREDENTIALS_MISSING: "Username and/or password missing",
    USER_EXISTS: "A user with the same name already exists",
    USER_SAVE_FAILED: "Could not save user",
    USER_NOT_FOUND: "Could not retrieve user",
    LOGIN_FAILED: "Could not log user in",
    NOT_LOGGED_IN: "Could not get logged-in user",
    ROLE_NAME_MISSING: "Role name missing",
    ROLE_EXISTS: "A role with the same name already exists",
    ROLE_NOT_FOUND: "Could not retrieve role",
    NO_START_RIGHT: "User has no right to start this app",
    NO_ADMIN_RIGHT: "User has no admin right",
    CSRF_FAILED: "CSRF token missing or wrong",
    PERMISSION_NAME_MISSING: "Permission name missing",
    APP_NAME_MISSING: "App name missing",
    APP_NAME_TAKEN: "An app with the same name already exists",
    APP_SAVE_FAILED: "Could not save app",
    APP_NOT_FOUND: "Could not retrieve app",
    APP_INTEGRITY_FAILED: "Could not start app due to security concerns",
    APP_NAME_INVALID: "Invalid characters in app name",
    COLLECTION_NAME_INVALID: "Invalid characters in collection name",
    APP_PATH_MISSING: "App path missing",
    TARGET_UNSUPPORTED: "App targets an unsupported version",
    DOWNLOAD_FAILED: "Could not download app from online repository",
    REGISTRY_PACKAGE_FAILED: "Could not retrieve package.json from online repository",
    REGISTRY_README_FAILED: "Could not retrieve readme from online repository",
    LOCAL_PACKAGE_FAILED: "Could not retrieve package.json from local repository",
    LOCAL_README_FAILED: "Could not retrieve readme from local repository",
    APP_NOT_RUNNING: "App port missing",
    APP_START_FAILED: "Could not start app",
    NOT_SYSTEM_APP: "This app is not a system app",
    PAYLOAD_TOO_LARGE: "Request body too large",
    DB_QUERY_MISSING: "Document or query object missing",
    RATE_LIMITED: "Too many attempts; try again later",
    STORAGE_FULL: "The host's disk is full",
    APP_STOP_FAILED: "Could not stop app",
    EVENT_NAME_RESERVED: "This event name is reserved for the host",
    HOST_NOT_ALLOWED: "This server does not answer for that host name",
    APP_BAD_GATEWAY: "The app's server gave no valid answer",
    APP_GATEWAY_TIMEOUT: "The app's server did not answer in time",
}

# HTTP status that mirrors each outcome; anything unlisted is a 400.
HTTP_STATUS: dict[int, int] = {
    UNKNOWN: 500,
    ENDPOINT_NOT_FOUND: 404,
    APP_TOKEN_MISSING: 401,
    APP_TOKEN_UNKNOWN: 401,
    CREDENTIALS_MISSING: 401,
    LOGIN_FAILED: 401,
    NOT_LOGGED_IN: 401,
    USER_EXISTS: 409,
    USER_NOT_FOUND: 404,
    ROLE_EXISTS: 409,
    ROLE_NOT_FOUND: 404,
    NO_START_RIGHT: 403,
    NO_ADMIN_RIGHT: 403,
    CSRF_FAILED: 403,
    NOT_SYSTEM_APP: 403,
    APP_NAME_TAKEN: 409,
    APP_NOT_FOUND: 404,
    APP_INTEGRITY_FAILED: 403,
    APP_SAVE_FAILED: 500,
    DOWNLOAD_FAILED: 502,
    REGISTRY_PACKAGE_FAILED: 502,
    REGISTRY_README_FAILED: 502,
    LOCAL_PACKAGE_FAILED: 404,
    LOCAL_README_FAILED: 404,
    APP_NOT_RUNNING: 409,
    APP_START_FAILED: 500,
    PAYLOAD_TOO_LARGE: 413,
    RATE_LIMITED: 429,
    STORAGE_FULL: 507,
    APP_STOP_FAILED: 500,
    EVENT_NAME_RESERVED: 403,
    HOST_NOT_ALLOWED: 421,
    APP_BAD_GATEWAY: 502,
    APP_GATEWAY_TIMEOUT: 504,
}


class BoltError(Exception):
    """A failure with a Bolt code, a message for developers and one for people."""

    def __init__(
        self,
        code: int,
        message: str | None = None,
        *,
        user_title: str | None = None,
        user_message: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.code = code
        self.message = message or MESSAGES.get(code, MESSAGES[UNKNOWN])
        self.user_title = user_title or f"Bolt Error {code}"
        self.user_message = user_message or MESSAGES.get(code, self.message)
        self.details = details or {}
        super().__init__(f"[{code}] {self.message}")

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 400)
