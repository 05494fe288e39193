"""alignkit's rolling perplexity equals lm-eval's ``HFLM.loglikelihood_rolling`` text by text, and the verdict
logic of bench/lmeval_peer.py fails when a speed-up or a number is off."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import lmeval_peer  # noqa: E402

TEXTS = [
    "The capital of France is Paris, a city on the Seine.",
    "Red, green and blue are three colours; so are cyan and magenta. " * 6,
    "Hi!",
]


def test_text_nlls_equal_lm_eval_rolling_loglikelihood(tiny_model):
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from alignkit.eval.model_spec import ModelSpec, load_model
    from alignkit.eval.perplexity import text_nlls

    model, tok = load_model(ModelSpec(name="tiny", base=tiny_model))
    nll, count = text_nlls(model, tok, TEXTS, max_length=1024, batch_size=2)
    lm = HFLM(pretrained=tiny_model, batch_size=1, device="cpu", dtype="float32")
    ll = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(TEXTS)])
    assert list(count) == [len(lm.tok_encode(t)) for t in TEXTS]  # BOS prefix: every text token is scored
    # Both sides sum a text's token log-probs in fp32; a random tiny model puts ~10 nats on each token, so a long
    # text's sum nears 1000 nats, where fp32 spacing is 6e-5: allow 4 ulps of the sum beyond the bench's 1e-4.
    # A missing BOS or a different window moves a text by whole nats.
    for a, b in zip(nll, ll, strict=True):
        assert abs(a + b) <= lmeval_peer.NLL_TOL + 4 * float(np.spacing(np.float32(abs(b))))


def run(wall_alignkit, wall_lm, out_alignkit, out_lm, kind="perplexity"):
    arms = {"alignkit": (wall_alignkit, out_alignkit), "alignkit-again": (wall_alignkit, out_alignkit)}
    arms |= {"lmeval-bs1": (wall_lm, out_lm), "lmeval-bs4": ([w / 2 for w in wall_lm], out_lm)}
    runs = {arm: [{"wall": w, "cpu": w, "out": out} for w in walls] for arm, (walls, out) in arms.items()}
    return lmeval_peer.summarize(kind, runs, ["lmeval-bs1", "lmeval-bs4"], None)


def test_verdict_is_the_weaker_peer_and_needs_equal_numbers():
    ppl = {"nll": [10.0, 20.0], "count": [5, 10]}
    s = run([1.0, 1.0, 1.0], [8.0, 8.0, 8.0], ppl, ppl)
    # lm-eval at batch 4 took half of batch 1's time: 4x is the verdict, not 8x
    assert s["verdict_speedup"] == pytest.approx(4.0) and s["verdict_arm"] == "lmeval-bs4" and s["met"]
    slow = run([1.0, 1.0, 1.0], [5.0, 5.0, 5.0], ppl, ppl)
    assert slow["verdict_speedup"] == pytest.approx(2.5) and not slow["met"]
    off = run([1.0, 1.0, 1.0], [8.0, 8.0, 8.0], ppl, {"nll": [10.0, 20.0002]})  # 2e-4 nats on one text
    assert not off["met"] and off["equality"]["lmeval-bs1"]["texts_within_tol"] == 1


def test_one_differing_token_fails_generation():
    a = {"text": ["a b", "c"], "ids": [[1, 5, 2], [7, 2]]}
    b = {"text": ["a b", "c d"], "ids": [[1, 5, 2], [7, 9, 2]]}
    s = run([1.0, 1.0], [9.0, 9.0], a, b, kind="generation")
    eq = s["equality"]["lmeval-bs1"]
    assert eq["rows_token_identical"] == 1 and eq["first_differing_token_of_differing_rows"] == [1]
    assert not s["numbers_equal"] and not s["met"]
