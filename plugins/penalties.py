"""Public name of the length and repetition penalties (pure Python, no transformers import): the code is
:mod:`alignkit.plugins.common.length_penalty` and :mod:`alignkit.plugins.common.repetition_penalty`."""

from alignkit.plugins.common.length_penalty import LengthPenalty, length_penalty, relative_length_penalty
from alignkit.plugins.common.repetition_penalty import RepetitionPenalty, ngram_repetition_rate

__all__ = ["LengthPenalty", "RepetitionPenalty", "length_penalty", "ngram_repetition_rate", "relative_length_penalty"]
