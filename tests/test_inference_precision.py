"""The inference precision switch (alignkit.inference_precision): exact stays fp32 on a CPU, fast loads bf16 weights
only where bf16 is native, and the switch reaches the model loaders, the cache identities and the suite parser."""

import pytest

pytest.importorskip("torch")

import torch  # noqa: E402

from alignkit import inference_precision as ip  # noqa: E402
from alignkit.errors import AlignkitError  # noqa: E402
from alignkit.eval.model_spec import ModelSpec, load_model  # noqa: E402


@pytest.fixture
def native(monkeypatch):
    """Pretend the CPU has (True) or lacks (False) native bf16."""

    def set_native(value: bool) -> None:
        monkeypatch.setattr(ip, "native_bf16", lambda: value)

    return set_native


def test_unknown_precision_is_one_line_naming_where():
    with pytest.raises(AlignkitError, match=r"suite x.yaml: must be one of exact, fast, got 'bf16'") as err:
        ip.check_precision("bf16", "suite x.yaml")
    assert "\n" not in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU dtypes")
def test_fast_means_bf16_only_where_native(native):
    native(True)
    assert ip.effective_precision("fast") == "fast" and ip.inference_dtype("fast") == torch.bfloat16
    assert ip.inference_dtype("exact") == torch.float32
    native(False)  # bf16 would be emulated (~24x slower): fast falls back to exact
    assert ip.effective_precision("fast") == "exact" and ip.inference_dtype("fast") == torch.float32


def test_identity_names_the_dtype_only_on_the_fast_path(tiny_model, native):
    exact = ModelSpec("m", tiny_model)
    native(True)
    assert "dtype" not in exact.identity()  # exact keeps the cache keys it always had
    fast = exact.with_precision("fast")
    assert fast.identity()["dtype"] == "bfloat16" and fast.identity() != exact.identity()
    native(False)
    assert fast.identity() == exact.identity()  # same weights, same outputs, same key
    with pytest.raises(AlignkitError, match="model 'm'"):
        exact.with_precision("half")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU dtypes")
def test_loaders_follow_the_precision(tiny_model, native):
    from alignkit.eval.metric_base import LazyModel

    native(True)
    model, _ = load_model(ModelSpec("m", tiny_model, precision="fast"))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    lazy = LazyModel(ModelSpec("m", tiny_model))
    assert {p.dtype for p in lazy()[0].parameters()} == {torch.float32}
    lazy.use_precision("fast")  # the harness generates in fp32, then scores in bf16: cast in place
    assert {p.dtype for p in lazy()[0].parameters()} == {torch.bfloat16}
    assert lazy.spec.precision == "fast"


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU dtypes")
def test_reward_scorer_fast_is_bf16_and_close_to_exact(tiny_model, native):
    from alignkit.eval.rm_score import load_reward_scorer

    native(True)
    prompts = [[{"role": "user", "content": "Say hi."}], [{"role": "user", "content": "Name a colour."}]]
    replies = ["Hi there!", "Blue, like the sky."]
    torch.manual_seed(0)  # the tiny causal LM has no score head: both loads must draw the same random one
    exact = load_reward_scorer(tiny_model, batch_size=2, max_length=64)
    torch.manual_seed(0)
    fast = load_reward_scorer(tiny_model, batch_size=2, max_length=64, precision="fast")
    assert next(fast.model.parameters()).dtype == torch.bfloat16
    assert next(exact.model.parameters()).dtype == torch.float32
    a, b = exact(prompts, replies), fast(prompts, replies)
    assert a != b  # bf16 rounding shows: the two paths are really different
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 0.1


def test_suite_rejects_an_unknown_precision(tmp_path):
    from alignkit.eval.suite import load_suite

    good = tmp_path / "s.yaml"
    good.write_text("name: s\nprecision: fast\nprompt_sets: [{card: sharegpt-sft-smol}]\n")
    assert load_suite(str(good)).precision == "fast"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: s\nprecision: half\nprompt_sets: [{card: sharegpt-sft-smol}]\n")
    with pytest.raises(AlignkitError, match=r"bad.yaml: 'precision': must be one of exact, fast"):
        load_suite(str(bad))


def test_pair_builder_rejects_an_unknown_precision(tmp_path):
    from alignkit.data.onpolicy import build_onpolicy_pairs

    with pytest.raises(AlignkitError, match="on-policy pairs: precision: must be one of exact, fast"):
        build_onpolicy_pairs(4, precision="half", scorer="grader:math_answer", cache_root=tmp_path)
