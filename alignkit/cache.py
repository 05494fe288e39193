"""Where alignkit keeps materialized models and built datasets (``$ALIGNKIT_CACHE``, default ~/.cache/alignkit)."""

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    root = Path(os.environ.get("ALIGNKIT_CACHE", Path.home() / ".cache" / "alignkit"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
