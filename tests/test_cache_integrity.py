"""Corrupt cache entries are detected and rebuilt with a one-line warning, never used silently: built datasets
(sha256 per split in the manifest), generation-cache JSONL (rows checksum in its meta line), the materialized
embedded model (safetensors header against the file size)."""

import json

import pytest
import torch
from safetensors.torch import save_file

from alignkit.data.store import cached_build

ROWS = {"train": [{"text": f"row {i}"} for i in range(5)], "test": [{"text": "held out"}]}


def _build(tmp_path, calls):
    def produce():
        calls.append(1)
        return ROWS, {"source": "test"}

    return cached_build("toy", {"version": 1}, produce, cache_root=tmp_path)


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(p.read_bytes()[:-7]),  # cut short
        lambda p: p.write_bytes(p.read_bytes().replace(b"row 3", b"row 8")),  # same size, other content
        lambda p: p.unlink(),
    ],
    ids=["truncated", "bit-rot", "missing"],
)
def test_a_damaged_dataset_build_is_rebuilt_with_a_warning(tmp_path, caplog, damage):
    calls = []
    first = _build(tmp_path, calls)
    assert _build(tmp_path, calls).reused and len(calls) == 1  # intact: reused, not rebuilt
    damage(first.files["train"])
    again = _build(tmp_path, calls)
    assert len(calls) == 2 and not again.reused and again.rows("train") == ROWS["train"]
    assert "dataset cache" in caplog.text and "is corrupt" in caplog.text and "rebuilding" in caplog.text


def test_a_build_from_before_checksums_is_checked_by_its_row_count(tmp_path, caplog):
    calls = []
    first = _build(tmp_path, calls)
    manifest_path = first.directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["sha256"]
    manifest_path.write_text(json.dumps(manifest))
    assert _build(tmp_path, calls).reused  # old manifest, whole files: still reused
    first.files["train"].write_text('{"text": "row 0"}\n')
    assert not _build(tmp_path, calls).reused and "does not hold the 5 rows" in caplog.text


def _generation_entry(path, responses):
    from alignkit.eval.generation import _rows_digest

    lines = [
        json.dumps({"index": i, "prompt": [], "response": r, "n_tokens": 1, "truncated": False, "looping": False})
        for i, r in enumerate(responses)
    ]
    meta = json.dumps({"meta": {"model": "m", "rows_sha256": _rows_digest(lines)}})
    path.write_text("".join(line + "\n" for line in [meta, *lines]))


def test_a_damaged_generation_cache_entry_is_regenerated_with_a_warning(tmp_path, caplog):
    from alignkit.eval.generation import _read_cache

    entry = tmp_path / "gen.jsonl"
    _generation_entry(entry, ["Paris.", "Four\u2028lines"])  # U+2028 inside a reply is not a line break
    assert _read_cache(entry, 2).responses == ["Paris.", "Four\u2028lines"]
    assert caplog.text == ""
    entry.write_text(entry.read_text().replace("Paris.", "Rome."))
    assert _read_cache(entry, 2) is None and "do not match their checksum" in caplog.text
    _generation_entry(entry, ["Paris.", "Four"])
    entry.write_text(entry.read_text()[:-9])  # cut inside the last row
    assert _read_cache(entry, 2) is None and "unreadable: JSONDecodeError" in caplog.text


def test_safetensors_completeness_and_a_truncated_model_cache_is_rebuilt(tmp_path, monkeypatch, caplog):
    from alignkit import models

    weights = tmp_path / "model.safetensors"
    save_file({"a": torch.zeros(4, 4), "b": torch.ones(3)}, str(weights))
    assert models.safetensors_complete(weights)
    weights.write_bytes(weights.read_bytes()[:-4])
    assert not models.safetensors_complete(weights)

    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    target = tmp_path / "cache" / "models" / models.DEFAULT_MODEL
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    (target / "model.safetensors").write_bytes(weights.read_bytes())

    class Rebuilding(Exception):
        pass

    def rebuild(package):
        raise Rebuilding

    monkeypatch.setattr(models, "_package_dir", rebuild)  # the rebuild's first step: stop there
    with pytest.raises(Rebuilding):
        models.materialize_embedded()
    assert "is truncated or corrupt; materializing it again" in caplog.text


def test_a_build_finished_meanwhile_by_another_process_is_kept(tmp_path):
    # Two processes (make's side lane and its main lane) may build the same card at once: the one that finishes
    # second keeps the first one's build instead of swapping directories under a reader, and leaves no temp dir.
    calls = []

    def produce():
        calls.append("outer")
        _build(tmp_path, calls)  # "the other process" completes the same build while this one produces
        return ROWS, {"source": "test"}

    result = cached_build("toy", {"version": 1}, produce, cache_root=tmp_path)
    assert calls == ["outer", 1] and result.reused and result.rows("train") == ROWS["train"]
    assert [p.name for p in (tmp_path / "toy").iterdir()] == [result.directory.name]


def test_a_damaged_score_cache_is_recomputed_with_a_warning(tmp_path, monkeypatch, caplog):
    from alignkit.eval.score_cache import ScoreStore

    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path))
    computed = []

    def compute(idx):
        computed.append(idx)
        return [float(i) for i in idx]

    store = ScoreStore("reward", {"base": "m"}, {"batch_size": 8})
    prompts, replies = ["a", "b", "a"], ["x", "y", "x"]
    assert store.lookup(prompts, replies, compute) == [0.0, 1.0, 0.0] and computed == [[0, 1]]  # unique rows once
    assert store.lookup(prompts, replies, compute) == [0.0, 1.0, 0.0] and len(computed) == 1  # stored: reused
    store.path.write_text(store.path.read_text()[:-9])  # cut short
    assert store.lookup(prompts, replies, compute) == [0.0, 1.0, 0.0] and len(computed) == 2
    assert "score cache" in caplog.text and "unreadable" in caplog.text
    other = ScoreStore("reward", {"base": "m"}, {"batch_size": 4})  # another setting: another store
    assert other.path != store.path
    monkeypatch.setenv("ALIGNKIT_SCORE_CACHE", "0")  # benches that time the scoring passes
    assert store.lookup(prompts, replies, compute) == [0.0, 1.0, 0.0] and len(computed) == 3
