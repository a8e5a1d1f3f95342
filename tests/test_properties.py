"""Property tests (hypothesis) on the Predictor: any Unicode text up to 100,000 characters gets a valid
prediction or one clear error for empty input; mixed batches handle each item; answers are repeatable."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference.predictor import Predictor
from inference.tables import predict_table
from training.paths import PROJECT_ROOT
from training.text import EmptyTextError, TextError

MAX_CHARS = 100_000
# Few examples, no deadline: each one runs the tiny model, and a case is slow only because the machine is busy.
PROPERTY_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Generating 100,000 random characters one by one is slow, so long texts repeat a random piece up to
# the limit; short ones are fully random over every code point (control, combining, right-to-left,
# emoji, unassigned, private use), with whitespace-only and empty strings drawn often.
short_texts = st.text(max_size=300)
long_texts = st.builds(
    lambda piece, repeats: (piece * repeats)[:MAX_CHARS],
    st.text(min_size=1, max_size=64),
    st.integers(min_value=1, max_value=MAX_CHARS),
)
blank_texts = st.text(alphabet=st.sampled_from(" \t\n\r\x0b\x0c\u00a0\u2003\u3000"), max_size=50)
any_text = st.one_of(short_texts, long_texts, blank_texts, st.sampled_from(["", "a", "\u200b", "🎬" * 1000]))


@pytest.fixture(scope="module")
def predictor(tiny_predictor) -> Predictor:
    return tiny_predictor  # exact fp32, the CPU default without AMX (and under the tests)


@pytest.fixture(scope="module")
def exact_predictor(tiny_predictor) -> Predictor:
    return tiny_predictor


def assert_valid(prediction) -> None:
    probabilities = np.array(list(prediction.probabilities.values()))
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    assert abs(probabilities.sum() - 1) < 1e-9
    assert prediction.label == max(prediction.probabilities, key=prediction.probabilities.get)
    assert prediction.confidence == prediction.probabilities[prediction.label]


@PROPERTY_SETTINGS
@given(text=any_text)
def test_any_text_gets_a_valid_prediction_or_the_empty_text_error(predictor, text):
    assert len(text) <= MAX_CHARS
    if not text.strip():
        with pytest.raises(EmptyTextError, match="empty"):
            predictor.predict_one(text)
        return
    first = predictor.predict_one(text)
    assert_valid(first)
    assert predictor.predict_one(text) == first  # the same input, the same output, exactly


@PROPERTY_SETTINGS
@given(texts=st.lists(st.one_of(short_texts, long_texts, st.just(""), st.just("   ")), min_size=1, max_size=8))
def test_a_mixed_batch_flags_each_empty_review_and_predicts_every_other(exact_predictor, texts):
    rows = predict_table(exact_predictor, texts, batch_size=3, progress=False)
    assert len(rows) == len(texts)  # nothing dropped, order kept
    for text, row in zip(texts, rows):
        if not text.strip():
            assert row["error"] == "empty text" and row["predicted_label"] == ""
            continue
        assert row["error"] == ""
        alone = exact_predictor.predict_one(text)  # batched with others or alone: the same answer
        assert row["predicted_label"] == alone.label
        assert row["p_positive"] == pytest.approx(alone.probabilities["POSITIVE"], abs=1e-5)
    empty = [index for index, text in enumerate(texts) if not text.strip()]
    if empty:  # Predictor.predict itself refuses the whole batch, naming the first empty review
        with pytest.raises(EmptyTextError, match=f"Review {empty[0] + 1} is empty"):
            exact_predictor.predict(texts)


def test_the_longest_review_is_predicted(predictor):
    text = ("An unforgettable film, " * 5000)[:MAX_CHARS]
    assert len(text) == MAX_CHARS
    assert_valid(predictor.predict_one(text))


# Python strings can hold lone surrogates, which are not Unicode text: the CLI gets them from non-UTF-8
# bytes in its arguments (surrogateescape). They get one clear error, never a tokenizer traceback.
def test_a_lone_surrogate_gets_the_projects_text_error(predictor):
    # TextError, not any ValueError: the tokenizer's own UnicodeEncodeError is a ValueError too.
    with pytest.raises(TextError, match=r"^Review 1 holds bytes that are not UTF-8 text .* iconv -f latin1") as error:
        predictor.predict_one("caf\udce9 is great")
    assert type(error.value) is TextError


def test_non_utf8_bytes_on_the_command_line_give_one_error_line(tiny_adapter):
    result = subprocess.run(
        [sys.executable, "inference/predict.py", "--model", str(tiny_adapter), b"caf\xe9 great"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=180,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_non_utf8_bytes_on_stdin_give_one_error_line(tiny_adapter):
    result = subprocess.run(
        [sys.executable, "inference/predict.py", "--model", str(tiny_adapter)],
        input=b"caf\xe9 great\n",
        capture_output=True,
        cwd=PROJECT_ROOT,
        timeout=180,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 2 and "Traceback" not in stderr
    assert "not UTF-8" in stderr.strip().splitlines()[-1]
