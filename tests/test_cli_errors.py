"""The three command lines as a user runs them from the repo root: a user mistake ends with one
`error:` line and exit status 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from training.paths import PROJECT_ROOT

pytestmark = (
    pytest.mark.slow
)  # each case starts the command line in a fresh Python (seconds apiece): left out of the fast loop


def run(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *arguments], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=180)


@pytest.fixture(scope="module")
def bad(bad_files, tmp_path_factory):
    """conftest's bad files (latin1.txt, empty.jsonl) and one file readable as text but not as labelled data."""
    folder = next(iter(bad_files)).parent
    (folder / "no_label.csv").write_text("text\nA fine film.\nA bad film.\n")
    return folder


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["training/train.py", "--base-model", "minilm", "--data", "{bad}/no_label.csv"], "no 'label' column"),
        (["training/train.py", "--base-model", "minilm", "--data", "{bad}/empty.jsonl"], "is empty"),
        (
            ["evaluation/evaluate.py", "--model", "{bad}/no_adapter", "--data", "{bad}/no_label.csv"],
            "no 'label' column",
        ),
        (["inference/predict.py", "--file", "{bad}/latin1.txt"], "not valid UTF-8"),
        (["inference/predict.py", "--model", "{bad}/no_adapter", "A fine film."], "No adapter folder"),
    ],
    ids=["train-no-label", "train-empty-file", "evaluate-no-label", "predict-latin1", "predict-no-adapter"],
)
def test_user_mistakes_exit_2_with_one_clear_line(bad, command, message):
    result = run(*[part.format(bad=bad) for part in command])
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and message in result.stderr


@pytest.mark.parametrize("script", ["inference/predict.py", "evaluation/evaluate.py"])
def test_a_batch_size_below_one_is_refused_by_the_parser(script):
    result = run(script, "--batch-size", "0", "A fine film.")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--batch-size: must be a whole number of at least 1, not '0'" in result.stderr
