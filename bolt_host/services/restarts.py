"""When to restart a crashed app, and how long to wait first.

Modelled on systemd rather than supervisord or PM2: every crash counts,
whether it happened during start or after hours of uptime.

* ``restart``: ``on-failure`` (default) restarts on a non-zero exit, a signal or
  an unknown status; ``always`` also after a clean exit; ``never`` does not.
* Delay: the first restart after a crash comes after ``first_seconds`` (0: a
  ``kill -9`` or a one-off fault is replaced at once); each further one waits
  ``base * factor**(attempt - 1)``, capped, with +-``jitter`` so a fleet of apps
  that crashed together does not restart in lock-step.
* ``attempt`` goes back to 0 when the app had been up for ``stable_seconds``.
* More than ``burst`` crashes within ``window_seconds`` and the app is
  ``failed``: a crash loop never restarts forever.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

RESTART_MODES = ("on-failure", "always", "never")


@dataclass(frozen=True)
class RestartPolicy:
    first_seconds: float = 0.0
    base_seconds: float = 0.1
    factor: float = 2.0
    max_seconds: float = 30.0
    jitter: float = 0.1
    stable_seconds: float = 30.0
    burst: int = 5
    window_seconds: float = 60.0

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before restart number ``attempt`` (0 = the first since a stable run)."""
        if attempt <= 0:
            return self.first_seconds
        raw = min(self.max_seconds, self.base_seconds * self.factor ** (attempt - 1))
        return raw * (1 + self.jitter * (2 * rand() - 1))


def wants_restart(mode: str | None, exit_code: int | None) -> bool:
    """Should an app with restart ``mode`` that ended with ``exit_code`` be restarted?"""
    if mode == "never":
        return False
    if mode == "always":
        return True
    return exit_code != 0


@dataclass
class CrashHistory:
    """Crashes of one app: the backoff attempt and the recent crash times."""

    policy: RestartPolicy
    attempt: int = 0
    # a list, not a deque: it holds at most a burst's few times, and an empty deque is a 624-byte
    # block per app where an empty list is 56 bytes (200 running apps: 0.11 MB)
    recent: list[float] = field(default_factory=list)

    def record(self, now: float, uptime: float | None) -> None:
        """Count a crash at monotonic time ``now`` after ``uptime`` seconds up."""
        # A stable run resets the backoff, not the rate limit (as systemd's StartLimit).
        if uptime is not None and uptime >= self.policy.stable_seconds:
            self.attempt = 0
        self.attempt += 1
        self.recent.append(now)
        while self.recent and now - self.recent[0] > self.policy.window_seconds:
            del self.recent[0]

    @property
    def over_limit(self) -> bool:
        return len(self.recent) >= self.policy.burst

    def next_delay(self) -> float:
        """The wait before the restart for the crash just recorded (attempt 1 -> base)."""
        return self.policy.delay(self.attempt - 1)

    def reset(self) -> None:
        self.attempt = 0
        self.recent.clear()
