"""The Streamlit app run headlessly with AppTest: predictions on the shipped adapter, and every error
path (empty text, missing or corrupt adapter, an over-long review) shown as a message, not a crash."""

from __future__ import annotations

import shutil

import pytest
from streamlit.testing.v1 import AppTest

from app import MAX_REVIEW_CHARS, MODEL_DIR_ENV, cap_review
from tests.conftest import PROJECT_ROOT, SHIPPED_MODEL_DIR
from training.model import describe_device, pick_device

DEVICE = describe_device(pick_device())  # "CPU" on a machine without a GPU: the app picks as the tests do
POSITIVE_REVIEW = "A wonderful, moving film. The acting is superb and I loved every minute of it."
NEGATIVE_REVIEW = "Dreadful. Boring, badly acted and far too long; I wanted to walk out after ten minutes."


def run_app(monkeypatch, model_dir=SHIPPED_MODEL_DIR, review: str | None = None) -> AppTest:
    """Run app.py once on `model_dir`, then again with `review` typed into the box (if given)."""
    monkeypatch.setenv(MODEL_DIR_ENV, str(model_dir))
    app = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=60).run()
    if review is not None and not app.error:
        app.text_area(key="review").input(review).run()
    assert not app.exception, [exception.value for exception in app.exception]
    return app


def shown_label(app: AppTest) -> str | None:
    """The predicted label in the result header, or None when no result is shown."""
    for block in app.markdown:
        for label in ("POSITIVE", "NEGATIVE"):
            if block.value.startswith("##") and label in block.value:
                return label
    return None


def metric_value(app: AppTest, label: str) -> str:
    return next(metric.value for metric in app.metric if metric.label == label)


@pytest.mark.parametrize(
    ("review", "expected"), [(POSITIVE_REVIEW, "POSITIVE"), (NEGATIVE_REVIEW, "NEGATIVE")], ids=["positive", "negative"]
)
def test_review_gets_label_confidence_bars_and_device(review, expected, monkeypatch):
    app = run_app(monkeypatch, review=review)

    assert shown_label(app) == expected
    confidence = float(metric_value(app, "Confidence").rstrip("%"))
    assert 50.0 <= confidence <= 100.0
    bars = app.get("progress")
    assert {bar.text.split(":")[0] for bar in bars} == {"POSITIVE", "NEGATIVE"}
    assert bars[0].text.startswith(expected)  # the most likely class first
    assert sum(bar.value for bar in bars) == pytest.approx(100, abs=1)
    assert any(f"ms on {DEVICE}" in caption.value for caption in app.caption)
    assert [box.value for box in app.sidebar.success] == [f"Running on **{DEVICE}**"]
    assert not app.warning and not app.error


def test_sidebar_shows_model_settings_and_recorded_metrics(monkeypatch):
    app = run_app(monkeypatch)
    details = " ".join(block.value for block in app.sidebar.markdown)
    for expected in ("all-MiniLM-L6-v2", "trained_model/", "512 tokens", "head_tail", "rank 32"):
        assert expected in details
    sidebar_metrics = {metric.label: metric.value for metric in app.sidebar.metric}
    assert sidebar_metrics["Accuracy"] == "93.2%" and sidebar_metrics["F1"] == "93.3%"  # trained_model/metrics.json


def test_example_button_fills_the_box_and_predicts(monkeypatch):
    app = run_app(monkeypatch)
    app.button(key="example_Scathing").click().run()
    assert not app.exception
    assert app.text_area(key="review").value.startswith("A tedious")
    assert shown_label(app) == "NEGATIVE"


@pytest.mark.parametrize("review", ["", "   \n\t  "], ids=["empty", "whitespace"])
def test_empty_review_shows_a_friendly_notice(review, monkeypatch):
    app = run_app(monkeypatch, review=review)
    assert any("Type or paste a review" in notice.value for notice in app.info)
    assert shown_label(app) is None and not app.error


def test_missing_adapter_folder_shows_how_to_fix_it(tmp_path, monkeypatch):
    app = run_app(monkeypatch, tmp_path / "no_such_adapter")
    assert len(app.error) == 1
    message = app.error[0].value
    assert "No adapter folder" in message and "no_such_adapter" in message
    assert "training/train.py" in message  # the fix
    assert not app.text_area  # st.stop(): nothing below the error


def test_corrupt_adapter_shows_an_error_not_a_traceback(tmp_path, monkeypatch):
    # A copy of the shipped adapter, not conftest's tiny_adapter: that one is trained on first use
    # (about 45 s on 2 CPU cores) while this loads the packaged base in about 2 s, then fails.
    corrupt = tmp_path / "corrupt_adapter"
    shutil.copytree(SHIPPED_MODEL_DIR, corrupt)
    (corrupt / "adapter_model.safetensors").write_bytes(b"not a safetensors file" * 10)
    app = run_app(monkeypatch, corrupt)
    assert len(app.error) == 1
    assert "corrupt" in app.error[0].value and "corrupt_adapter" in app.error[0].value
    assert not app.text_area


def test_over_long_review_is_truncated_with_a_warning_and_still_predicted(monkeypatch):
    review = (POSITIVE_REVIEW + " ") * (30_000 // len(POSITIVE_REVIEW) + 1)
    assert len(review) > 30_000
    app = run_app(monkeypatch, review=review)
    assert len(app.warning) == 1 and f"{MAX_REVIEW_CHARS:,}" in app.warning[0].value
    assert shown_label(app) == "POSITIVE"


@pytest.mark.parametrize(
    ("text", "max_chars", "expected"),
    [
        ("", 5, ("", False)),
        ("abcde", 5, ("abcde", False)),  # exactly at the cap: kept whole
        ("abcdef", 5, ("abdef", True)),  # the middle goes: the model reads both ends
        ("abcdefgh", 4, ("abgh", True)),
        ("é" * 7, 3, ("ééé", True)),  # counts characters, not bytes
    ],
)
def test_cap_review(text, max_chars, expected):
    assert cap_review(text, max_chars) == expected


def test_cap_review_default_is_max_review_chars():
    assert cap_review("x" * MAX_REVIEW_CHARS) == ("x" * MAX_REVIEW_CHARS, False)
    capped, was_truncated = cap_review("x" * (MAX_REVIEW_CHARS + 1))
    assert len(capped) == MAX_REVIEW_CHARS and was_truncated
