"""The admin token as it is now: read from `admin_token_file` again whenever the file
changes, so a rotated Secret takes effect without a restart.

The kubelet rotates a mounted Secret by swapping the `..data` symlink (or a person
rewrites the file in place), so the file is re-read by path, never through a held
descriptor: at most once per POLL_SECONDS, its (inode, mtime, size) is compared with
what was read, and a change is read. A file that cannot be read, or reads empty, keeps
the token in force (and is logged): a half-finished rotation never opens the door.
Each new token gets a new `generation`, which ends the sessions made with the old one.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from lookout.sidecar.runtime.logs import FailureLog

log = logging.getLogger(__name__)
_failures = FailureLog(log)

POLL_SECONDS = 2.0  # a rotation takes effect this soon after the file changes


class AdminToken:
    """The current token; `path` empty: a fixed one (LOOKOUT_ADMIN_TOKEN, or none)."""

    def __init__(self, token: str, path: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._token = token
        self._path = path
        self._clock = clock
        self.generation = 0
        self._seen = self._identity() if path else None
        self._checked = clock()

    def _identity(self) -> tuple[int, int, int] | None:
        try:
            status = os.stat(self._path)
        except OSError:
            return None
        return status.st_ino, status.st_mtime_ns, status.st_size

    @property
    def value(self) -> str:
        """The token in force, after a look at the file when one is due."""
        if self._path and self._clock() - self._checked >= POLL_SECONDS:
            self.reload()
        return self._token

    def reload(self) -> bool:
        """Reads the file if it changed; whether the token changed."""
        self._checked = self._clock()
        identity = self._identity()
        if identity is None or identity == self._seen:
            return False
        try:
            with open(self._path, encoding="utf-8") as file:  # by path: the symlink's target now
                token = file.read().strip()
        except (OSError, UnicodeDecodeError) as error:
            _failures.warning("read", "admin_token_file %s: cannot read it (%s); the token in "
                              "force stays", self._path, error)
            return False
        if not token:
            _failures.warning("empty", "admin_token_file %s is empty; the token in force "
                              "stays", self._path)
            return False
        self._seen = identity
        if token == self._token:
            return False
        self._token = token
        self.generation += 1
        log.info("admin_token_file %s changed: the new token is in force and every gallery "
                 "session made with the old one has ended", self._path)
        return True
