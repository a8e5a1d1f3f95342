"""The app with any label set: a four-label adapter (tests/test_labels.py's star bands, trained on the tiny
DistilBERT) run headlessly with AppTest shows four bars and the Predictor's top label, a slider that starts at
1/N, an explanation whose legend names the predicted label, and upload scoring with four probability columns.
The N-label helpers behind them are tested directly; the binary page is tests/test_app.py's, unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import tiny_train_config
from tests.test_labels import BANDS, STARS, rated_sample
from training.paths import PROJECT_ROOT
from training.text import UNCERTAIN
from webapp.render import page_intro, threshold_range, verdict_colours
from webapp.results import confidence_histogram
from webapp.runtime import MODEL_DIR_ENV

REVIEW = "A wonderful, moving film. The acting is superb and I loved every minute of it."
COLUMNS = [f"p_{label}" for label in STARS]


@pytest.fixture(scope="module")
def stars_app_adapter(tmp_path_factory, tiny_distilbert, imdb_dir) -> Path:
    """Four star bands (terrible, poor, good, excellent): 40 training and 10 test reviews each, 12 steps."""
    from training.train import main

    data = tmp_path_factory.mktemp("app_stars")
    for split, size in (("train", 40), ("test", 10)):
        rated_sample(imdb_dir, split, size, BANDS.get).rename(columns={"band": "label"})[["text", "label"]].to_parquet(
            data / f"{split}.parquet"
        )
    folder = tmp_path_factory.mktemp("app_stars_run")
    config = tiny_train_config(tiny_distilbert, data, folder, labels=",".join(STARS), report_to="none")
    main(config)
    return Path(config.output_dir)


@pytest.fixture(scope="module")
def stars_predictor(stars_app_adapter):
    from inference.predictor import Predictor

    predictor = Predictor.from_pretrained(stars_app_adapter, device="cpu")
    assert predictor.labels == STARS
    return predictor


def run_app(monkeypatch, model_dir: Path, review: str | None = None) -> AppTest:
    monkeypatch.setenv(MODEL_DIR_ENV, str(model_dir))
    app = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=120).run()
    if review is not None and not app.error:
        app.text_area(key="review").input(review).run()
    assert not app.exception, [exception.value for exception in app.exception]
    assert not app.error, [error.value for error in app.error]
    return app


def shown_label(app: AppTest) -> str | None:
    """The verdict in the result header (a label or UNCERTAIN), or None when no result is shown."""
    for block in app.markdown:
        if block.value.startswith("## "):
            return block.value.rstrip("]").rsplit(" ", 1)[-1]
    return None


def test_four_labels_show_four_bars_the_top_label_and_uncertain_below_the_slider(monkeypatch, stars_predictor):
    app = run_app(monkeypatch, stars_predictor.model_dir, review=REVIEW)
    reference = stars_predictor.predict_one(REVIEW)

    bars = app.get("progress")
    ranked = sorted(reference.probabilities.items(), key=lambda item: -item[1])
    assert len(bars) == 4 and [bar.text for bar in bars] == [f"{name}: {p:.1%}" for name, p in ranked]
    assert ranked[0][0] == reference.label
    confidence = next(metric.value for metric in app.metric if metric.label == "Confidence")
    assert confidence == f"{reference.confidence:.1%}"

    slider = app.slider(key="uncertain_below")
    low, high, default = threshold_range(4)
    assert (slider.min, slider.max, slider.value) == (low, high, default) == (25, 99, 62)
    assert "4 labels fits each: terrible, poor, good, excellent" in app.markdown[0].value
    # The tiny model is unsure of everything (its top probability is well under 62%): UNCERTAIN, leaning to it.
    assert reference.confidence < default / 100
    assert shown_label(app) == UNCERTAIN
    assert any(caption.value.startswith(f"Leans {reference.label}, below the 62%") for caption in app.caption)

    app.slider(key="uncertain_below").set_value(25).run()  # at the floor 1/N every prediction is a verdict
    assert not app.exception and shown_label(app) == reference.label
    assert not [caption for caption in app.caption if caption.value.startswith("Leans ")]
    assert "Macro F1" in [metric.label for metric in app.sidebar.metric]


def test_the_explanation_legend_names_the_predicted_label(monkeypatch, stars_predictor):
    app = run_app(monkeypatch, stars_predictor.model_dir, review=REVIEW)
    label = stars_predictor.predict_one(REVIEW).label
    app.button(key="explain").click().run()
    assert not app.exception, [exception.value for exception in app.exception]
    markup = "".join(block.proto.body for block in app.get("html"))
    assert f"towards {label}" in markup and "towards the other labels" in markup
    headings = [block.value for block in app.markdown]
    assert f"**Towards {label}**" in headings and "**Towards the other labels**" in headings
    assert any(heading.startswith(f"**Why {label}:**") for heading in headings)
    assert any(f"logit({label}) - mean logit of the other 3 labels" in caption.value for caption in app.caption)


def test_upload_scoring_writes_one_probability_column_per_label(monkeypatch, stars_predictor, imdb_dir):
    sample = pd.read_parquet(imdb_dir / "test.parquet", columns=["text"]).sample(8, random_state=1)
    frame = pd.DataFrame({"id": range(8), "review": sample["text"].tolist()})
    frame.loc[2, "review"] = ""
    app = run_app(monkeypatch, stars_predictor.model_dir)
    app.file_uploader(key="upload").upload("stars.csv", frame.to_csv(index=False).encode(), "text/csv").run()
    app.button(key="score").click().run()
    assert not app.exception and not app.error, [error.value for error in app.error]

    table = app.dataframe[0].value
    assert list(table.columns) == ["id", "review", "predicted_label", "confidence", "verdict", *COLUMNS, "error"]
    filled = table.drop(index=2)
    assert np.allclose(filled[COLUMNS].sum(axis=1), 1.0, atol=1e-5)
    expected = stars_predictor.predict(filled["review"].tolist())
    assert filled["predicted_label"].tolist() == [prediction.label for prediction in expected]
    assert np.allclose(filled["confidence"], [prediction.confidence for prediction in expected], atol=1e-4)
    assert (filled["verdict"] == UNCERTAIN).all()  # all under the default 62%
    assert table.loc[2, "error"] == "empty text"
    shares = {metric.label.split(" (")[0] for metric in app.metric}
    assert {*STARS, UNCERTAIN, "empty row"} <= shares
    assert app.get("arrow_vega_lite_chart") or app.get("vega_lite_chart")

    app.slider(key="uncertain_below").set_value(25).run()  # re-judged: every filled row is its top label
    rejudged = app.dataframe[0].value.drop(index=2)
    assert rejudged["verdict"].tolist() == rejudged["predicted_label"].tolist()


def test_n_label_helpers():
    assert threshold_range(2) == (50, 99, 75)  # the binary slider as it always was
    assert threshold_range(3) == (34, 99, 66) and threshold_range(4) == (25, 99, 62)
    assert threshold_range(100)[0] == 1

    assert confidence_histogram([0.3, 1.0], n_labels=2)["reviews"].tolist() == [1] + [0] * 8 + [1]  # clipped to 50%
    four = confidence_histogram([0.25, 0.3, 0.61, 1.0], n_labels=4)
    assert len(four) == 15 and four["low"].iloc[0] == 0.25 and four["reviews"].sum() == 4
    assert four.set_index("confidence")["reviews"][["25%–30%", "30%–35%", "60%–65%", "95%–100%"]].tolist() == [1] * 4
    assert confidence_histogram([1 / 3], n_labels=3)["low"].iloc[0] == 0.3  # down to a bin edge

    assert verdict_colours(("NEGATIVE", "POSITIVE")) == ["#dc2626", "#16a34a", "#9ca3af", "#e5e7eb"]
    colours = verdict_colours(STARS)
    assert len(colours) == 6 and len(set(colours)) == 6 and colours[-2:] == ["#9ca3af", "#e5e7eb"]
    assert verdict_colours(tuple(map(str, range(20)))) is None  # the chart's own palette

    assert page_intro(("NEGATIVE", "POSITIVE")) == page_intro(None) and "positive or negative" in page_intro(None)
    assert "3 labels fits each: 1, 2, 3" in page_intro(("1", "2", "3"))
