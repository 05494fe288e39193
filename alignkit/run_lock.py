"""A lock file in the staging run directory, so two ``alignkit train`` on one run cannot destroy each other.

``runs/<recipe>.partial/.alignkit.lock`` holds the owner's pid, host and process start time. A second train on the
same run refuses with one line while the owner lives. A lock whose process is gone (killed, crashed without cleanup),
or whose pid now belongs to a newer process, is stale: it is taken over with a one-line warning. A lock written on
another host cannot be checked from here, so it is treated as live and the message says how to clear it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

from alignkit.errors import AlignkitError

LOCK_FILE = ".alignkit.lock"
logger = logging.getLogger("alignkit")


def _start_ticks(pid: int) -> int | None:
    """The process start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), or None off Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def holder(directory: Path) -> dict | None:
    """The lock's owner record when a live process holds ``directory``; ``None`` when it is free or stale (a stale
    lock is removed, with a warning)."""
    path = Path(directory) / LOCK_FILE
    if not path.is_file():
        return None
    try:
        owner = json.loads(path.read_text())
        pid = int(owner["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        owner, pid = {}, -1  # unreadable: a lock cut off while being written is stale
    if owner.get("host", socket.gethostname()) != socket.gethostname():
        return owner
    same_process = owner.get("start_ticks") in (None, _start_ticks(pid))
    if pid == os.getpid():  # this process's own lock (a train called again in-process): not a conflict
        return None
    if pid > 0 and _alive(pid) and same_process:
        return owner
    logger.warning("%s: stale lock of process %s, which is no longer running; taking it over", path, pid)
    path.unlink(missing_ok=True)
    return None


def check_free(directory: Path) -> None:
    """Raise a one-line error when a live process holds ``directory``."""
    owner = holder(directory)
    if owner is not None:
        raise AlignkitError(
            f"{directory} is in use by process {owner.get('pid')} on {owner.get('host', '?')} (an alignkit train "
            f"started {owner.get('started', '?')}); wait for it to finish, or if that process is gone, delete "
            f"{Path(directory) / LOCK_FILE}"
        )


def acquire(directory: Path) -> None:
    """Take the lock of ``directory`` for this process; a live owner makes this a one-line error."""
    import time

    check_free(directory)
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start_ticks": _start_ticks(os.getpid()),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = Path(directory) / LOCK_FILE
    path.unlink(missing_ok=True)  # only this process's own earlier lock can still be here after check_free
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:  # another train took it between our check and now
        check_free(directory)
        raise AlignkitError(f"{directory} was just locked by another process; try again") from None
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)


def release(directory: Path) -> None:
    """Drop this process's lock of ``directory`` (a lock of another process is left alone)."""
    path = Path(directory) / LOCK_FILE
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if owner.get("pid") == os.getpid():
        path.unlink(missing_ok=True)
