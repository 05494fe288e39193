"""A full disk (OSError ENOSPC injected into the write) leaves the previous report and the last complete checkpoint
intact; the CLI says so in one line, and RESUME=1 continues from that checkpoint."""

import errno
import json
import os

import pytest
import transformers
from bad_input_cases import Ctx

from alignkit.cli import main
from alignkit.runs import last_checkpoint


def _disk_full(path="somewhere"):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_a_full_disk_while_writing_a_report_keeps_the_previous_one(tmp_path, monkeypatch):
    import alignkit.eval.report as report_module
    from alignkit.eval.harness import write_report

    old = {"report.json": '{"run": 1}\n', "metrics.png": b"\x89PNG old", "report.md": "# run 1\n"}
    new = {"report.json": '{"run": 2}\n', "metrics.png": b"\x89PNG new", "report.md": "# run 2\n"}
    monkeypatch.setattr(report_module, "render_files", lambda report: old)
    write_report({}, tmp_path)
    monkeypatch.setattr(report_module, "render_files", lambda report: new)
    real_fdopen, opened = os.fdopen, []

    def fdopen(fd, *args, **kwargs):  # the second file hits a full disk
        opened.append(fd)
        f = real_fdopen(fd, *args, **kwargs)
        if len(opened) == 2:
            f.write = lambda data: (_ for _ in ()).throw(_disk_full(tmp_path / "metrics.png"))
        return f

    monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(OSError) as exc:
        write_report({}, tmp_path)
    assert exc.value.errno == errno.ENOSPC
    monkeypatch.setattr(os, "fdopen", real_fdopen)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {
        k: v if isinstance(v, bytes) else v.encode() for k, v in old.items()
    }  # every old file whole, no temporary left


def test_a_full_disk_while_checkpointing_keeps_the_last_complete_checkpoint(tiny_model, tmp_path, monkeypatch, capsys):
    ctx = Ctx(tmp_path, tiny_model)
    argv = ctx.train("max_steps=3", "save_steps=1", "logging_steps=1")
    real_save_rng, saves = transformers.Trainer._save_rng_state, []

    def save_rng(self, output_dir):  # checkpoint-2 runs out of space after its weights and optimizer
        saves.append(output_dir)
        if len(saves) == 2:
            raise _disk_full(os.path.join(output_dir, "rng_state.pth"))
        return real_save_rng(self, output_dir)

    monkeypatch.setattr(transformers.Trainer, "_save_rng_state", save_rng)
    assert main(argv) == 2
    err = capsys.readouterr().err  # training had started: progress bars above, then one error line, no traceback
    errors = [line for line in err.splitlines() if line.startswith("alignkit: error")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0] and "Traceback" not in err, err[-1500:]
    assert (
        "no space left on the device writing" in errors[0] and "rng_state.pth" in errors[0] and "RESUME=1" in errors[0]
    )
    staging = ctx.runs / "out.partial"
    assert (staging / "checkpoint-2").is_dir()  # half-written ...
    assert last_checkpoint(staging) == str(staging / "checkpoint-1")  # ... so resume starts from checkpoint-1
    monkeypatch.setattr(transformers.Trainer, "_save_rng_state", real_save_rng)
    assert main(argv + ["--resume"]) == 0
    assert json.loads((ctx.runs / "out" / "run.json").read_text())["global_step"] == 3
