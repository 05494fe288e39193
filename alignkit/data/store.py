"""Built-dataset cache: JSONL splits plus a manifest, in a directory keyed by everything that shaped them.

Layout: ``<cache_root>/<name>/<key>/{train,test}.jsonl, manifest.json`` where ``key`` hashes the builder's
fingerprint (builder version, parameters, source file hash, model identity ...). A changed input gives a new key,
so nothing is ever rebuilt in place: a build writes a temporary sibling directory and renames it into place, and a
reader either sees a complete build (manifest written last) or none.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignkit.cache import cache_dir
from alignkit.errors import AlignkitError
from alignkit.io import atomic_write_json

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
_BUILDS_ALLOWED = contextvars.ContextVar("alignkit_builds_allowed", default=True)


@contextmanager
def reuse_only() -> Iterator[None]:
    """Inside this block :func:`cached_build` returns existing builds only, and raises instead of producing one: for
    readers that must neither spend minutes rebuilding (pair builders generate) nor read data made after the fact
    (the eval's check of which prompts a run trained on, :mod:`alignkit.eval.provenance`)."""
    token = _BUILDS_ALLOWED.set(False)
    try:
        yield
    finally:
        _BUILDS_ALLOWED.reset(token)


@dataclass
class BuildResult:
    """A built (or reused) dataset: one JSONL file per split and the manifest describing how it was made."""

    name: str
    directory: Path
    files: dict[str, Path]
    manifest: dict[str, Any]
    reused: bool

    def rows(self, split: str) -> list[dict[str, Any]]:
        if split not in self.files:
            raise AlignkitError(f"built dataset '{self.name}' has no split '{split}' (has {sorted(self.files)})")
        return read_jsonl(self.files[split])


def file_identity(path: str | os.PathLike) -> dict[str, Any]:
    """Size and sha256 of a source file (sha256 runs at ~1 GB/s, so hashing the 125 MB ShareGPT file is ~0.1 s)."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return {"path": str(path), "size": path.stat().st_size, "sha256": digest.hexdigest()}


def fingerprint_key(fingerprint: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_jsonl(path: str | os.PathLike, recover_truncated_tail: bool = False) -> list[dict[str, Any]]:
    """Read a JSONL file; a bad line raises a one-line AlignkitError naming the file and line number.

    With ``recover_truncated_tail`` (user data files), a last line that was cut off (no final newline, invalid JSON)
    is dropped with a warning that counts what was kept, as long as some complete row remains."""
    rows = []
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    # the text after the final newline: empty for a complete file, a fragment for a cut one
    tail = len(lines) if lines[-1].strip() else len(lines) - 1
    for lineno, raw in enumerate(lines[:tail], 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AlignkitError(
                f"{path}:{lineno}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                "re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
            ) from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            cut = lineno == len(lines)  # the last line, with no newline after it: the write was cut off
            if cut and recover_truncated_tail:
                if not rows:
                    raise AlignkitError(
                        f"{path}:{lineno}: the file is truncated inside this line and no complete row remains; "
                        "restore the full file"
                    ) from None
                logger.warning(
                    "%s:%d: file truncated inside this line; dropped it, kept %d rows", path, lineno, len(rows)
                )
                break
            raise AlignkitError(
                f"{path}:{lineno}: invalid JSON ({exc.msg}, column {exc.colno}); the line was not skipped: "
                "fix or delete it"
            ) from None
        if not isinstance(row, dict):
            raise AlignkitError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}; fix or delete it")
        rows.append(row)
    return rows


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def _verify_build(target: Path) -> tuple[str | None, dict[str, Any]]:
    """``(None, manifest)`` for a complete build, else ``(what is wrong, {})``: every split file must exist and match
    the sha256 the manifest recorded (builds made before checksums: the row count)."""
    try:
        manifest = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
        counts = dict(manifest["counts"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"manifest.json unreadable: {type(exc).__name__}", {}
    for split, count in counts.items():
        path = target / f"{split}.jsonl"
        if not path.is_file():
            return f"{path.name} is missing", {}
        expected = (manifest.get("sha256") or {}).get(split)
        if expected is not None and file_identity(path)["sha256"] != expected:
            return f"{path.name} does not match its checksum", {}
        if expected is None and sum(1 for line in open(path, "rb") if line.strip()) != count:
            return f"{path.name} does not hold the {count} rows of its manifest", {}
    return None, manifest


def _built_meanwhile(name: str, target: Path) -> BuildResult | None:
    """The complete build another process wrote at ``target`` while this one was producing it, if any."""
    if not (target / "manifest.json").exists():
        return None
    problem, manifest = _verify_build(target)
    if problem is not None:
        return None
    files = {split: target / f"{split}.jsonl" for split in manifest["counts"]}
    return BuildResult(name, target, files, manifest, reused=True)


def cached_build(
    name: str,
    fingerprint: dict[str, Any],
    produce: Callable[[], tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]],
    cache_root: str | os.PathLike | None = None,
    force: bool = False,
) -> BuildResult:
    """Return the build for ``fingerprint``, calling ``produce() -> (rows per split, extra manifest fields)`` only
    when no complete build with that fingerprint exists (or ``force``)."""
    parent = (Path(cache_root) if cache_root is not None else cache_dir("datasets")) / name
    key = fingerprint_key(fingerprint)
    target = parent / key
    manifest_path = target / "manifest.json"
    if manifest_path.exists() and not force:
        problem, manifest = _verify_build(target)
        if problem is None:
            files = {split: target / f"{split}.jsonl" for split in manifest["counts"]}
            return BuildResult(name, target, files, manifest, reused=True)
        logger.warning("dataset cache %s is corrupt (%s); rebuilding it", target, problem)
    if not _BUILDS_ALLOWED.get():
        raise AlignkitError(
            f"dataset '{name}' is not built on this machine for these inputs (key {key}); nothing is built here"
        )
    start = time.perf_counter()
    splits, extra = produce()
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{key}."))
    try:
        counts = {split: _write_jsonl(tmp / f"{split}.jsonl", rows) for split, rows in splits.items()}
        manifest = {
            "name": name,
            "key": key,
            "counts": counts,
            "sha256": {split: file_identity(tmp / f"{split}.jsonl")["sha256"] for split in counts},
            **extra,
            "fingerprint": fingerprint,
            "build_seconds": round(time.perf_counter() - start, 2),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_json(tmp / "manifest.json", manifest)  # last: its presence marks a complete build
        if not force and (same := _built_meanwhile(name, target)) is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            return same  # another process (a side lane, a second job) finished the same build first: keep it
        if target.exists():  # forced rebuild (or a stale incomplete dir): move the old one aside, then swap in
            old = Path(tempfile.mkdtemp(dir=parent, prefix=f".{key}.old."))
            os.replace(target, old / "build")
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if (same := _built_meanwhile(name, target)) is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return same
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = {split: target / f"{split}.jsonl" for split in counts}
    return BuildResult(name, target, files, manifest, reused=False)
