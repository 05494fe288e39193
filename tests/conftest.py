"""Shared fixtures: a tiny random model with the embedded tokenizer, and the embedded model itself.

Before anything runs, :func:`install_problem` checks that ``alignkit``, ``alignkit.eval`` and ``alignkit.plugins``
import from this checkout. pyproject maps ``alignkit.eval`` -> ``eval/`` and ``alignkit.plugins`` -> ``plugins/``,
which only an editable install (``make setup``) provides; without it, or with alignkit installed from another
checkout, every test would fail (or pass on other code) with a confusing import error instead of one clear line.
"""

import importlib.util
import json
import os
from pathlib import Path

import pytest

# Tests never reach for the hub: a forgotten hub id must fail fast, not hang.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

ROOT = Path(__file__).resolve().parent.parent
# import name -> the folder of this checkout it must come from (pyproject's package-dir)
PACKAGE_DIRS = {"alignkit": "alignkit", "alignkit.eval": "eval", "alignkit.plugins": "plugins"}


def install_problem(root: Path = ROOT) -> str | None:
    """``None`` when every package of :data:`PACKAGE_DIRS` imports from ``root``; else one line saying what is
    wrong and what to run."""
    for name, folder in PACKAGE_DIRS.items():
        try:
            spec = importlib.util.find_spec(name)
        except ImportError:
            spec = None
        if spec is None or spec.origin is None:
            return (
                f"{name} does not import: install this checkout in editable mode first "
                f"(`make setup`, or `pip install -e {root}`); pyproject maps alignkit.eval -> eval/, "
                "alignkit.plugins -> plugins/"
            )
        found = Path(spec.origin).resolve().parent
        if found != (root / folder).resolve():
            return f"{name} imports from {found}, not from {root / folder}: reinstall with `pip install -e {root}`"
    return None


def pytest_configure(config):
    problem = install_problem()
    if problem:
        raise pytest.UsageError(problem)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """Path to a ~3M-parameter Llama with the embedded SmolLM2 tokenizer (chat template included)."""
    from alignkit.models import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), arch="llama"))


@pytest.fixture(scope="session")
def tiny_rm(tmp_path_factory) -> str:
    """Path to a tiny random reward model (sequence classification, one label) with the embedded tokenizer."""
    from alignkit.models import build_tiny_reward_model

    return str(build_tiny_reward_model(tmp_path_factory.mktemp("tiny-rm")))


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory) -> str:
    """Same, with the Qwen2 architecture (the qwen recipes' family)."""
    from alignkit.models import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2"), arch="qwen2"))


@pytest.fixture(scope="session")
def embedded_model() -> str:
    """Path to the materialized SmolLM2-135M-Instruct checkpoint (built once per cache, ~30 s)."""
    from alignkit.models import materialize_embedded

    return str(materialize_embedded())


RM_PAIRS = [
    {
        "prompt": [{"role": "user", "content": q}],
        "chosen": [{"role": "assistant", "content": c}],
        "rejected": [{"role": "assistant", "content": r}],
    }
    for q, c, r in [("Say hi.", "Hi!", "No."), ("Name a colour.", "Blue.", "Nothing."), ("2+2?", "4", "5")]
]


@pytest.fixture
def rm_recipe(tiny_model, tmp_path) -> Path:
    """A one-step reward recipe on the tiny model and a three-pair card."""
    for split in ("train", "test"):
        (tmp_path / f"pairs-{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RM_PAIRS))
    (tmp_path / "pairs-card.yaml").write_text(
        "name: tiny-pairs\ndescription: test pairs\nsource: {file: 'pairs-{split}.jsonl'}\n"
        "format: {type: preference, conversational: true}\n"
        "columns: {prompt: prompt, chosen: chosen, rejected: rejected}\nsplits: {train: train, test: test}\n"
        "license: test\nsize: 3 rows\nrebuild: written by the test\n"
    )
    recipe = tmp_path / "rm-tiny.yaml"
    recipe.write_text(
        f"trainer: reward\nmodel_name_or_path: {tiny_model}\nuse_peft: true\nlora_r: 4\nlora_alpha: 8\n"
        f"lora_target_modules: [q_proj, v_proj]\nlora_modules_to_save: [score]\n"
        f"dataset: {tmp_path / 'pairs-card.yaml'}\nmax_steps: 1\nper_device_train_batch_size: 2\n"
        "max_length: 64\nlogging_steps: 1\nsave_strategy: 'no'\nreport_to: none\neval_suite: null\n"
    )
    return recipe
