"""An exclusive lock per destination file, so that two fetches of one file take turns.

`file_lock(dest)` holds `flock(LOCK_EX)` on `<dest>.lock` for the block: another process (or
thread) asking for the same `dest` waits until the block ends. Within one thread it is
re-entrant, so a fetch can hold it around "check, download, record" while the download takes it
again. The lock file is removed on release (while still locked); a waiter that then gets the
removed file notices that it is no longer the one at `<dest>.lock` and locks a fresh one, so
no lock files are left behind and no two holders ever exist. flock is released by the kernel
when a process dies, so a killed fetch never leaves a stale lock.

fcntl.flock rather than the `filelock` package: its lock files stay behind (they would be
tracked as outputs under resources/) and its re-entrancy depends on sharing one lock object.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

_held = threading.local()  # per thread: {resolved dest: depth}


def lock_path(dest: str | os.PathLike) -> Path:
    dest = Path(dest)
    return dest.with_name(dest.name + ".lock")


def _same_file(fd: int, path: Path) -> bool:
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino)


def _acquire(path: Path, dest: Path) -> int:
    waiting = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not waiting:
                    log.info("%s: another process is fetching it; waiting for it to finish (%s)", dest, path)
                    waiting = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the holder removed this lock file on release: lock the current one


@contextmanager
def file_lock(dest: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive lock on `dest` for the block (waits for other holders)."""
    dest = Path(dest)
    key = str(dest.resolve())
    depth = _held.__dict__.setdefault("depth", {})
    if key in depth:
        depth[key] += 1
        try:
            yield
        finally:
            depth[key] -= 1
        return
    path = lock_path(dest)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path, dest)
    depth[key] = 1
    try:
        yield
    finally:
        del depth[key]
        try:
            os.unlink(path)  # still locked: waiters on this file will retry on a fresh one
        except FileNotFoundError:
            pass
        os.close(fd)
