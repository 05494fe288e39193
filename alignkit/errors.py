"""User-facing errors.

Anything a user can cause (a malformed recipe, a missing column, a truncated file, an offline hub, an impossible
option combination) raises :class:`AlignkitError` with one line that names the field, file or row. The CLI prints
that line and exits with code 2, without a traceback.
"""


class AlignkitError(Exception):
    """An error caused by the user's input; its message is one self-contained line."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line
