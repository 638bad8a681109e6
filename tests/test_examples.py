"""The example scripts behind the tutorials run, so the documentation never goes stale.

Each script in docs/examples/ is run at its small size (``--small``) in a subprocess, writing
into a temporary directory; it must exit 0 and write every output the tutorials embed, as a
Markdown table or a PNG. A second test checks that the tutorials embed only outputs some
script writes and that every one of them is committed under docs/examples/output/ (so
``mkdocs build --strict``, whose snippets refuse a missing file, has them all).

These are CPU subprocess runs (the scripts pick no device); together they take about 15 s
of CPU time, most of it importing torch four times.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
TUTORIALS = ROOT / "docs" / "tutorials"

OUTPUTS = {
    "limit.py": ["limit_alpha_bar.md", "limit_alpha_bar.png", "limit_samplers.md", "limit_samplers.png",
                 "limit_orders.md"],
    "samplers_on_ring.py": ["samplers_ring_spread.md", "samplers_ring_time.md", "samplers_ring_adaptive.md",
                            "samplers_ring.png", "samplers_ring_scatter.png"],
    "train_eps.py": ["train_score_error.md", "train_samples.md", "train.png"],
    "with_torchsde.py": ["torchsde_gaussian.md", "torchsde_paths.png"],
    "frontier.py": ["frontier_ends.md"],
    "likelihood.py": ["likelihood_tolerance.md", "likelihood_choices.md", "likelihood_study.md", "likelihood_study.png"],
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_every_example_script_is_listed():
    scripts = {path.name for path in EXAMPLES.glob("*.py") if not path.name.startswith("_")}
    assert scripts == set(OUTPUTS)


@pytest.mark.parametrize("script", sorted(OUTPUTS))
def test_example_runs_small_and_writes_its_outputs(script, tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0"}
    result = subprocess.run([sys.executable, str(EXAMPLES / script), "--small", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert result.returncode == 0, f"{script} failed:\n{result.stderr[-4000:]}"
    for name in OUTPUTS[script]:
        path = tmp_path / name
        assert path.is_file(), f"{script} did not write {name}"
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{name} is not a PNG"
        else:
            text = path.read_text(encoding="utf-8")
            lines = text.splitlines()
            assert lines[0].startswith("| ") and re.fullmatch(r"\|[-|]+\|", lines[1]), f"{name} is not a table"
            assert "nan" not in text.lower(), f"{name} contains a NaN:\n{text}"
    leftovers = [path.name for path in tmp_path.iterdir() if path.name not in OUTPUTS[script]]
    assert not leftovers, f"{script} left unexpected files (temporary files not renamed?): {leftovers}"


def test_tutorials_embed_committed_outputs_of_the_scripts():
    produced = {name for names in OUTPUTS.values() for name in names}
    embedded = set()
    for page in TUTORIALS.glob("*.md"):
        embedded |= set(re.findall(r"examples/output/([\w-]+\.(?:md|png))", page.read_text(encoding="utf-8")))
    assert embedded, "the tutorials embed no example outputs"
    assert embedded <= produced, f"embedded but written by no script: {sorted(embedded - produced)}"
    missing = sorted(name for name in produced if not (EXAMPLES / "output" / name).is_file())
    assert not missing, f"outputs not committed under docs/examples/output (run the scripts): {missing}"
