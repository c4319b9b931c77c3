"""One process per SQLite file: an exclusive ``flock`` on a lock file beside it.

Two processes on one file would each keep their own board and never see the other's
writes (the embedded store has no change feed between processes). The lock is taken when
a store opens the file and held while any store object of this process uses it: several
stores of one process on one file (the multi-pod tests, sharing an in-process change
feed) share it, so the lock is per process, not per store object.

Why a lock file and ``flock`` rather than SQLite's ``locking_mode=EXCLUSIVE``: the latter
is per connection, so a second store object in the same process would be locked out too,
and in WAL mode it also stops other connections from reading. ``flock`` on a separate
file never meets SQLite's own POSIX locks on the database (on NFS, where ``flock`` is
emulated with POSIX locks, a lock on the database file itself would). It costs one
``open`` and one ``flock`` when the store opens; nothing per write.
"""

from __future__ import annotations

import fcntl
import os
import threading
from typing import Final

from server.store.port import StoreError

LOCK_SUFFIX: Final = ".lock"

# Lock files this process holds: path -> [file descriptor, store objects using it].
# Process-wide by nature: flock conflicts between two descriptors of one process too.
_held: dict[str, list[int]] = {}
_held_guard = threading.Lock()  # stores open and close from their own threads


class FileInUse(StoreError):
    """Another process holds the database file."""


class ProcessFileLock:
    """This process's exclusive hold on ``db_path`` (through ``db_path + ".lock"``).

    Args:
        db_path: the SQLite database file.
    """

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self.lock_path = os.path.realpath(db_path) + LOCK_SUFFIX
        self._holding = False

    def acquire(self) -> None:
        """Take the lock (or share this process's hold on it). Call :meth:`release` once
        done with the file.

        Raises:
            FileInUse: another process holds it.
            StoreError: the lock file cannot be created or opened.
        """
        if self._holding:
            return
        with _held_guard:
            entry = _held.get(self.lock_path)
            if entry is None:
                entry = [self._lock_new(), 0]
                _held[self.lock_path] = entry
            entry[1] += 1
        self._holding = True

    def _lock_new(self) -> int:
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(
                f"cannot open the lock file {self.lock_path!r} of {self.db_path!r}: {exc.strerror}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FileInUse(
                f"the SQLite file {self.db_path!r} is in use by another process "
                f"(it holds {self.lock_path!r}); one process per file"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot lock {self.lock_path!r}: {exc.strerror}") from None
        return fd

    def release(self) -> None:
        """Give up this object's hold; the lock goes when the process's last one does.
        Idempotent. The lock file stays (removing it would race with another process
        opening it)."""
        if not self._holding:
            return
        self._holding = False
        with _held_guard:
            entry = _held[self.lock_path]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[self.lock_path]
                os.close(entry[0])  # closing the descriptor releases the flock
