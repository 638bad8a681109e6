"""Shared plumbing of the example scripts: the command line and atomic writes of their outputs.

Every example takes ``--small`` (a fast run, used by ``tests/test_examples.py``) and
``--out DIR`` (default: ``docs/examples/output``, whose files the tutorials embed).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed; must come before pyplot is imported

OUTPUT = Path(__file__).resolve().parent / "output"


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--small", action="store_true", default=os.environ.get("DIFFSDE_EXAMPLES_SMALL") == "1",
                        help="a fast run with fewer steps and samples (also: DIFFSDE_EXAMPLES_SMALL=1)")
    parser.add_argument("--out", type=Path, default=OUTPUT, help=f"output directory (default: {OUTPUT})")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def _atomic(path: Path, write) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, 0o644)  # mkstemp creates 0600
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (plus a final newline) to ``path`` via a temporary file and a rename."""
    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text.rstrip("\n") + "\n")

    _atomic(path, write)
    print(f"wrote {path}")


def save_figure(figure, path: Path) -> None:
    """Save a matplotlib figure as a small PNG, atomically, and close it."""
    import matplotlib.pyplot as plt

    _atomic(path, lambda temporary: figure.savefig(temporary, format="png", dpi=90, bbox_inches="tight"))
    plt.close(figure)
    print(f"wrote {path}")
