"""Shared fixtures: a tiny random model with the embedded tokenizer, and the embedded model itself."""

import os

import pytest

# Tests never reach for the hub: a forgotten hub id must fail fast, not hang.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """Path to a ~3M-parameter Llama with the embedded SmolLM2 tokenizer (chat template included)."""
    from alignkit.models import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), arch="llama"))


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
