"""An optional tqdm progress bar over a run's steps."""

from __future__ import annotations

from typing import Iterable


def progress_bar(iterable: Iterable, enabled: bool, total: int, desc: str) -> Iterable:
    """``iterable`` itself, or wrapped in a tqdm bar (imported only when enabled)."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)
