"""tests/readme_check.py (`make check`) reads paths out of prose: punctuation around a path is not part of it."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from readme_check import PATH_PREFIXES, _path_words  # noqa: E402


def test_a_path_ending_a_parenthesis_and_a_sentence_is_read_whole():
    words = _path_words("(measured in bench/results/pipeline.md). See `recipes/dpo-smol.yaml`,", PATH_PREFIXES)
    assert words == ["bench/results/pipeline.md", "recipes/dpo-smol.yaml"]
    assert _path_words("runs/./x and eval/.", PATH_PREFIXES) == ["runs/./x", "eval/."]  # a trailing "/." is kept
