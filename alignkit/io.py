"""Atomic file writes: a reader never sees a half-written report, and a crash leaves the old file intact."""

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _umask_mode() -> int:
    # mkstemp creates 0600 files; a report or checkpoint should get the usual permissions (0666 minus umask).
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_files(directory: str | os.PathLike, files: dict[str, str | bytes], last: str | None = None) -> None:
    """Write every file of ``files`` (name -> text or bytes) into ``directory``, all or none: each goes to a temporary
    sibling first, and only when all are written (a full disk fails here) are they renamed into place, ``last``
    last. A failed write leaves the previous files untouched and no temporary behind."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    try:
        for name, content in files.items():
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
            written[name] = tmp
            with os.fdopen(
                fd,
                "wb" if isinstance(content, bytes) else "w",
                **({} if isinstance(content, bytes) else {"encoding": "utf-8"}),
            ) as f:
                f.write(content)
            os.chmod(tmp, _umask_mode())
    except BaseException:
        for tmp in written.values():
            Path(tmp).unlink(missing_ok=True)
        raise
    for name in sorted(written, key=lambda n: n == last):
        os.replace(written[name], directory / name)
