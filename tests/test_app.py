"""The Streamlit app run headlessly with AppTest: predictions on the shipped adapter, "uncertain"
verdicts, the on-demand explanation, batch scoring of an uploaded file, and every error path (empty
text, missing or corrupt adapter, an over-long review, a bad upload) shown as a message, not a crash.
The pure helpers behind them (verdict, the highlight HTML, upload reading, results) are tested directly."""

from __future__ import annotations

import dataclasses
import html
import io
import math
import re
import shutil
import subprocess
import sys
import tomllib

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import SHIPPED_MODEL_DIR
from training.device import describe_device, pick_device
from training.errors import DataError
from training.paths import PROJECT_ROOT
from training.text import UNCERTAIN, Prediction
from webapp import uploads
from webapp.render import (
    DEFAULT_UNCERTAIN_BELOW,
    MAX_REVIEW_CHARS,
    cap_review,
    code_span,
    highlight_html,
    legend_html,
    verdict,
    word_colour,
)
from webapp.results import confidence_histogram, results_frame, score_texts, verdict_counts, verdict_summary
from webapp.runtime import MODEL_DIR_ENV
from webapp.uploads import (
    MAX_BATCH_ROWS,
    MAX_UPLOAD_MB,
    download_name,
    guess_text_column,
    parse_upload,
    read_upload,
    text_columns,
)

DEVICE = describe_device(pick_device())  # "CPU" on a machine without a GPU: the app picks as the tests do
POSITIVE_REVIEW = "A wonderful, moving film. The acting is superb and I loved every minute of it."
NEGATIVE_REVIEW = "Dreadful. Boring, badly acted and far too long; I wanted to walk out after ten minutes."
NEUTRAL_SENTENCE = "I went to work today."


def run_app(monkeypatch, model_dir=SHIPPED_MODEL_DIR, review: str | None = None) -> AppTest:
    """Run app.py once on `model_dir`, then again with `review` typed into the box (if given)."""
    monkeypatch.setenv(MODEL_DIR_ENV, str(model_dir))
    app = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=60).run()
    if review is not None and not app.error:
        app.text_area(key="review").input(review).run()
    assert not app.exception, [exception.value for exception in app.exception]
    return app


def shown_label(app: AppTest) -> str | None:
    """The verdict in the result header (a label or UNCERTAIN), or None when no result is shown."""
    for block in app.markdown:
        for label in ("POSITIVE", "NEGATIVE", UNCERTAIN):
            if block.value.startswith("##") and label in block.value:
                return label
    return None


def metric_value(app: AppTest, label: str) -> str:
    return next(metric.value for metric in app.metric if metric.label == label)


@pytest.mark.parametrize(
    ("review", "expected"), [(POSITIVE_REVIEW, "POSITIVE"), (NEGATIVE_REVIEW, "NEGATIVE")], ids=["positive", "negative"]
)
def test_review_gets_label_confidence_bars_and_device(review, expected, monkeypatch, shipped_predictor):
    app = run_app(monkeypatch, review=review)

    # The figures shown are the Predictor's on the same review, as the CLI gives them (computed apart).
    reference = shipped_predictor.predict_one(review)
    assert shown_label(app) == expected == reference.label
    assert metric_value(app, "Confidence") == f"{reference.confidence:.1%}"
    bars = app.get("progress")
    ranked = sorted(reference.probabilities.items(), key=lambda item: -item[1])  # the most likely class first
    assert [bar.text for bar in bars] == [f"{name}: {probability:.1%}" for name, probability in ranked]
    assert [bar.value for bar in bars] == [int(probability * 100) for _, probability in ranked]  # as st.progress does
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


def failed_load_message(app: AppTest, logs) -> tuple[str, str]:
    """The one error a visitor sees for a failed model load, and the log it refers to."""
    assert len(app.error) == 1 and not app.text_area  # st.stop(): nothing below the error
    message = app.error[0].value
    reference = re.search(r"\(reference ([\w.-]+)\)", message).group(1)
    return message, (logs / f"{reference}.log").read_text()


def test_a_missing_adapter_folder_is_a_reference_for_visitors_and_the_fix_in_the_log(tmp_path, monkeypatch):
    monkeypatch.setenv("SENTIMENT_LOG_DIR", str(tmp_path / "logs"))
    app = run_app(monkeypatch, tmp_path / "no_such_adapter")
    message, log = failed_load_message(app, tmp_path / "logs")
    assert "could not be loaded" in message and "server's log" in message
    assert "no_such_adapter" not in message and str(tmp_path) not in message and "No adapter folder" not in message
    assert "No adapter folder" in log and "no_such_adapter" in log and "training/train.py" in log  # the fix


def test_corrupt_adapter_shows_an_error_not_a_traceback(tmp_path, monkeypatch):
    # A copy of the shipped adapter, not conftest's tiny_adapter: that one is trained on first use
    # (about 45 s on 2 CPU cores) while this loads the packaged base in about 2 s, then fails.
    monkeypatch.setenv("SENTIMENT_LOG_DIR", str(tmp_path / "logs"))
    corrupt = tmp_path / "corrupt_adapter"
    shutil.copytree(SHIPPED_MODEL_DIR, corrupt)
    (corrupt / "adapter_model.safetensors").write_bytes(b"not a safetensors file" * 10)
    app = run_app(monkeypatch, corrupt)
    message, log = failed_load_message(app, tmp_path / "logs")
    assert "corrupt" not in message and "Traceback" not in message
    assert "corrupt" in log and "corrupt_adapter" in log


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


# ----------------------------------------------------------------------------- uncertain verdicts


def test_the_slider_re_judges_the_verdict_where_it_crosses_the_confidence(monkeypatch, shipped_predictor):
    reference = shipped_predictor.predict_one(NEUTRAL_SENTENCE)
    assert 0.5 <= reference.confidence < DEFAULT_UNCERTAIN_BELOW  # a neutral sentence: below the default bar
    app = run_app(monkeypatch, review=NEUTRAL_SENTENCE)
    assert shown_label(app) == UNCERTAIN
    leaning = next(caption.value for caption in app.caption if caption.value.startswith("Leans "))
    assert leaning == f"Leans {reference.label}, below the {DEFAULT_UNCERTAIN_BELOW:.0%} confidence set for a verdict."
    assert metric_value(app, "Confidence") == f"{reference.confidence:.1%}"

    # The slider moves in whole percents: just below the confidence the label shows, just above it
    # UNCERTAIN again, and below once more: each move re-judges the same prediction.
    percent = reference.confidence * 100
    below, above = math.floor(percent), math.floor(percent) + 1
    for threshold, expected in ((below, reference.label), (above, UNCERTAIN), (below, reference.label)):
        app.slider(key="uncertain_below").set_value(threshold).run()
        assert shown_label(app) == expected, threshold
        leans = [caption.value for caption in app.caption if caption.value.startswith("Leans ")]
        assert leans == (
            [f"Leans {reference.label}, below the {threshold}% confidence set for a verdict."]
            if expected == UNCERTAIN
            else []
        )
        assert metric_value(app, "Confidence") == f"{reference.confidence:.1%}"  # the same prediction throughout


@pytest.mark.parametrize(
    ("confidence", "threshold", "expected"),
    [
        (0.95, 0.85, ("POSITIVE", False)),
        (0.85, 0.85, ("POSITIVE", False)),  # at the threshold: a verdict
        (0.8499, 0.85, (UNCERTAIN, True)),
        (0.51, 0.5, ("POSITIVE", False)),
        (0.99, 1.0, (UNCERTAIN, True)),
    ],
)
def test_verdict(confidence, threshold, expected):
    prediction = Prediction("POSITIVE", confidence, {"NEGATIVE": 1 - confidence, "POSITIVE": confidence})
    assert verdict(prediction, threshold) == expected


def test_verdict_keeps_a_confident_negative():
    assert verdict(Prediction("NEGATIVE", 0.97, {"NEGATIVE": 0.97, "POSITIVE": 0.03}), 0.85) == ("NEGATIVE", False)


# ----------------------------------------------------------------------------- explanation highlighting


@dataclasses.dataclass(frozen=True)
class Word:  # the shape of inference.explain.WordAttribution
    word: str
    start: int
    end: int
    score: float


def words_of(text: str, scores: dict[str, float]) -> list[Word]:
    return [
        Word(match.group(), match.start(), match.end(), scores.get(match.group(), 0.0))
        for match in re.finditer(r"\S+", text)
    ]


def visible_text(markup: str) -> str:
    """What a browser shows of highlight_html's markup, as plain text."""
    return html.unescape(re.sub(r"<[^>]+>", "", markup.replace("<br>", "\n")))


def test_highlight_html_escapes_every_piece_of_the_review():
    text = "Great <script>alert(\"x\")</script> & <b>bold</b> 'quoted' film"
    words = words_of(text, {"Great": 2.0, '<script>alert("x")</script>': -1.0, "<b>bold</b>": 0.5})
    markup = highlight_html(text, words)
    assert "<script" not in markup and "<b>" not in markup
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in markup and "&amp;" in markup
    assert set(re.findall(r"<(\w+)", markup)) == {"div", "span"}  # only the markup the builder adds
    assert visible_text(markup) == text


def test_highlight_html_colours_by_sign_and_scales_to_the_strongest_word():
    text = "superb acting, dull plot, a film"
    markup = highlight_html(text, words_of(text, {"superb": 4.0, "dull": -2.0, "acting,": 1.0}))
    colours = {word: colour for colour, word in re.findall(r"background-color: ([^;]+);[^>]*>([^<]+)</span>", markup)}
    assert colours["superb"] == "rgba(22, 163, 74, 0.80)"  # the strongest word: green at full strength
    assert colours["dull"] == "rgba(220, 38, 38, 0.40)"  # half as strong, towards NEGATIVE: red at half
    assert colours["acting,"] == "rgba(22, 163, 74, 0.20)"
    assert colours["plot,"] == "transparent" and colours["film"] == "transparent"  # score 0
    assert visible_text(markup) == text


def test_highlight_html_keeps_offsets_line_breaks_and_unread_text():
    text = "Loved it.\n\nBut the middle\r\nwas cut. Hated the end."
    # Only the head and tail were read (as for a truncated long review): the middle has no attribution.
    words = [Word("Loved", 0, 5, 1.5), Word("Hated", text.index("Hated"), text.index("Hated") + 5, -3.0)]
    markup = highlight_html(text, words)
    assert markup.count("<span") == 2
    assert '">Loved</span>' in markup and '">Hated</span>' in markup
    assert "<br><br>" in markup and "\n" not in markup  # a blank line cannot end the HTML block early
    assert visible_text(markup) == text.replace("\r\n", "\n")


@pytest.mark.parametrize(
    "words",
    [[], [Word("a", 0, 1, 0.0)], [Word("a", 0, 1, 1.0), Word("a", 0, 1, 1.0)], [Word("zzz", 3, 99, 1.0)]],
    ids=["no words", "all zero", "overlapping", "past the end"],
)
def test_highlight_html_never_repeats_or_invents_text(words):
    assert visible_text(highlight_html("a b", words)) == "a b"


@pytest.mark.parametrize(
    ("word", "expected"), [("great", "` great `"), ("`", "`` ` ``"), ("a``b", "``` a``b ```"), ("$x$", "` $x$ `")]
)
def test_code_span_shows_any_word_literally(word, expected):
    assert code_span(word) == expected


def test_word_colour_and_legend():
    assert word_colour(0.0, 1.0) == word_colour(1.0, 0.0) == "transparent"
    assert word_colour(5.0, 1.0) == "rgba(22, 163, 74, 0.80)"  # capped at full strength
    legend = legend_html("NEG<", "POS&")
    assert "towards NEG&lt;" in legend and "towards POS&amp;" in legend
    assert "rgba(220, 38, 38, 0.80)" in legend and "rgba(22, 163, 74, 0.80)" in legend


def test_explain_button_shows_the_highlighted_review_with_top_words(monkeypatch):
    review = "A wonderful film with superb acting, but the ending was dreadful."
    app = run_app(monkeypatch, review=review)
    assert not app.get("html")  # nothing is explained until asked: it costs seconds on a CPU
    app.button(key="explain").click().run()
    assert not app.exception, [exception.value for exception in app.exception]
    markup = "".join(block.proto.body for block in app.get("html"))
    assert "towards POSITIVE" in markup and "towards NEGATIVE" in markup  # the legend
    assert "rgba(22, 163, 74" in markup and "rgba(220, 38, 38" in markup  # green and red words
    assert review in visible_text(markup)
    headings = [block.value for block in app.markdown]
    assert "**Towards POSITIVE**" in headings and "**Towards NEGATIVE**" in headings
    assert any("Explained in" in caption.value for caption in app.caption)

    app.slider(key="uncertain_below").set_value(60).run()  # another rerun: the explanation stays, not recomputed
    assert app.get("html") and "explain" not in [button.key for button in app.button]
    app.text_area(key="review").input(NEGATIVE_REVIEW).run()  # a new review: the old explanation goes
    assert not app.get("html") and "explain" in [button.key for button in app.button]


# ----------------------------------------------------------------------------- limits and paths


_opened: list[str] | None = None  # paths opened while recording; None: not recording


def _record_opens(event: str, args: tuple) -> None:
    if _opened is not None and event == "open" and isinstance(args[0], (str, bytes)):
        _opened.append(args[0].decode(errors="replace") if isinstance(args[0], bytes) else args[0])


sys.addaudithook(_record_opens)  # audit hooks cannot be removed; this one records only inside a test


@pytest.fixture
def opened_paths():
    global _opened
    _opened = []
    yield _opened
    _opened = None


@pytest.mark.parametrize("path", ["/etc/passwd", "../../../../etc/hostname"])
def test_a_path_typed_as_a_review_is_classified_as_text_never_opened(path, monkeypatch, opened_paths):
    app = run_app(monkeypatch, review=path)
    assert shown_label(app) in ("POSITIVE", "NEGATIVE", UNCERTAIN)
    assert not app.error
    assert any(opened.endswith("metrics.json") for opened in opened_paths)  # the recorder works: info() reads it
    assert not [opened for opened in opened_paths if opened.endswith(("passwd", "hostname"))]
    assert "root:" not in " ".join(block.value for block in app.markdown)


def test_upload_size_cap_matches_the_servers():
    config = tomllib.loads((PROJECT_ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == MAX_UPLOAD_MB


# ----------------------------------------------------------------------------- uploads


def imdb_csv(imdb_dir, rows: int = 12) -> tuple[pd.DataFrame, bytes]:
    """Real test-split reviews in a column named "review" (not "text"), between an id and a label."""
    sample = pd.read_parquet(imdb_dir / "test.parquet").sample(rows, random_state=0)
    frame = pd.DataFrame({"id": range(rows), "review": sample["text"].tolist(), "label": sample["label"].tolist()})
    return frame, frame.to_csv(index=False).encode()


def test_uploaded_csv_is_scored_into_a_table_summary_and_download(imdb_dir, monkeypatch, opened_paths):
    frame, data = imdb_csv(imdb_dir)
    frame.loc[3, "review"] = ""  # an empty row is flagged, not dropped
    data = frame.to_csv(index=False).encode()
    app = run_app(monkeypatch)
    app.file_uploader(key="upload").upload("../../etc/my reviews.csv", data, "text/csv").run()
    assert not app.exception and not app.error
    assert app.selectbox(key="text_column").value == "review"  # the text column, though not named "text"
    assert app.selectbox(key="text_column").options == ["review"]  # id and label are numbers, not reviews

    app.button(key="score").click().run()
    assert not app.exception and not app.error, [error.value for error in app.error]
    table = app.dataframe[0].value
    assert len(table) == len(frame) and list(table["id"]) == list(range(len(frame)))  # every row, in order
    assert list(table.columns) == [
        "id",
        "review",
        "label",
        "predicted_label",
        "confidence",
        "verdict",  # right after the confidence, as the command line writes it (inference.tables.with_verdicts)
        "p_negative",
        "p_positive",
        "error",
    ]
    assert table.loc[3, "error"] == "empty text" and table.loc[3, "verdict"] == ""
    filled = table.drop(index=3)
    assert set(filled["predicted_label"]) <= {"POSITIVE", "NEGATIVE"} and (filled["error"] == "").all()
    correct = (filled["predicted_label"] == filled["label"].map({0: "NEGATIVE", 1: "POSITIVE"})).mean()
    assert correct >= 0.7  # the shipped adapter on real reviews (93% on the test split)
    shares = {metric.label.split(" (")[0]: metric.value for metric in app.metric}
    assert {"POSITIVE", "NEGATIVE", UNCERTAIN, "empty row"} <= set(shares)
    assert any("reviews/s" in caption.value for caption in app.caption)
    assert app.get("arrow_vega_lite_chart") or app.get("vega_lite_chart")  # the two summary charts
    assert [button.label for button in app.get("download_button")] == ["Download the results (CSV)"]
    assert not [path for path in opened_paths if "etc/my reviews" in path]  # the name is only a label

    # The verdicts at the default threshold, then re-judged at 99%: each is the label, or UNCERTAIN below the bar.
    def expected_verdicts(threshold):
        return [
            UNCERTAIN if c < threshold else label for c, label in zip(filled["confidence"], filled["predicted_label"])
        ]

    assert filled["verdict"].tolist() == expected_verdicts(DEFAULT_UNCERTAIN_BELOW)
    app.slider(key="uncertain_below").set_value(99).run()  # re-judged at the new threshold, not rescored
    rejudged = app.dataframe[0].value.drop(index=3)
    assert rejudged["confidence"].tolist() == filled["confidence"].tolist()
    assert rejudged["verdict"].tolist() == expected_verdicts(0.99)
    assert (rejudged["verdict"] != filled["verdict"]).any()  # some review lies between the two bars: it flipped
    assert not app.get("progress") or all("Scored" not in bar.text for bar in app.get("progress"))

    app.file_uploader(key="upload").set_value(None).run()  # file removed: its rows and results go too
    assert not app.dataframe and "batch_result" not in app.session_state and "upload_frame" not in app.session_state


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("reviews.pdf", b"%PDF-1.4", "reads .csv, .txt, .jsonl, .parquet files, not '.pdf'"),
        ("/etc/passwd", b"root:x:0:0", "not '(no extension)'"),
        ("reviews.csv", b"", "reviews.csv is empty"),
        ("reviews.csv", "text\nun film très réussi\n".encode("latin-1"), "reviews.csv is not valid UTF-8"),
        ("reviews.csv", b"text,label\n", "reviews.csv has no rows"),
        ("reviews.parquet", b"PAR1 not really parquet", "reviews.parquet could not be read as parquet"),
        ("reviews.csv", b"x" * (MAX_UPLOAD_MB * 1024 * 1024 + 1), f"up to {MAX_UPLOAD_MB} MB"),
        ("reviews.txt", b"good\n" * (MAX_BATCH_ROWS + 1), f"at most {MAX_BATCH_ROWS:,}"),
    ],
    ids=["wrong type", "a path", "empty", "bad encoding", "header only", "corrupt parquet", "too big", "too many rows"],
)
def test_bad_uploads_raise_one_clear_error_naming_the_upload(name, data, message):
    with pytest.raises(DataError) as error:
        read_upload(name, data)
    assert message in str(error.value)
    assert "sentiment_upload_" not in str(error.value)  # the temporary copy's path is never shown


def test_bad_upload_is_shown_as_an_error_in_the_app(monkeypatch):
    app = run_app(monkeypatch)
    app.file_uploader(key="upload").upload("notes.csv", "text\ncaf\xe9 cr\xe8me\n".encode("latin-1"), "text/csv").run()
    assert not app.exception
    assert len(app.error) == 1 and "notes.csv is not valid UTF-8" in app.error[0].value
    assert not app.get("selectbox") and not app.dataframe

    app.file_uploader(key="upload").set_value(("numbers.csv", b"id,stars\n1,5\n2,3\n", "text/csv")).run()
    assert len(app.error) == 1 and "no column of text (columns: id, stars)" in app.error[0].value


def test_read_upload_reads_every_type_from_bytes(tmp_path):
    frame = pd.DataFrame({"id": [1, 2], "review": ["Loved it.", ""]})
    frame.to_parquet(tmp_path / "r.parquet")
    uploads = {
        "r.csv": frame.to_csv(index=False).encode(),
        "r.jsonl": frame.to_json(orient="records", lines=True).encode(),
        "r.parquet": (tmp_path / "r.parquet").read_bytes(),
        "R.TXT": b"Loved it.\n\n",
    }
    for name, data in uploads.items():
        read = read_upload(name, data)
        column = "text" if name.endswith(".TXT") else "review"
        assert text_columns(read) == [column]
        assert read_upload(name, data, text_column=column)[column].tolist() == ["Loved it.", ""]


def test_text_column_guess():
    frame = pd.DataFrame(
        {"title": ["Heat", "Up"], "body": ["A long review of a film.", "Another long one."], "n": [1, 2]}
    )
    assert text_columns(frame) == ["title", "body"]
    assert guess_text_column(frame, ["title", "body"]) == "body"  # the longest texts
    assert guess_text_column(frame.assign(text=["a", "b"]), ["title", "body", "text"]) == "text"


class FakePredictor:
    """Predicts POSITIVE with confidence len(text)/100: enough to check order, chunking and flags."""

    labels = ("NEGATIVE", "POSITIVE")

    def __init__(self):
        self.calls = []

    def predict(self, texts, batch_size=32, progress=False):
        self.calls.append(list(texts))
        return [
            Prediction("POSITIVE", len(text) / 100, {"NEGATIVE": 1 - len(text) / 100, "POSITIVE": len(text) / 100})
            for text in texts
        ]


def test_score_texts_in_chunks_keeps_order_flags_empty_rows_and_reports_progress():
    texts = ["x" * n for n in (60, 55, 90, 70, 80)] + ["", "  "]
    progress = []
    predictor = FakePredictor()
    rows = score_texts(predictor, texts, on_progress=lambda done, total: progress.append((done, total)), chunk_size=3)
    assert [row["confidence"] for row in rows[:5]] == [0.6, 0.55, 0.9, 0.7, 0.8]
    assert [row["error"] for row in rows] == [""] * 5 + ["empty text"] * 2
    assert progress == [(3, 7), (6, 7), (7, 7)]
    assert predictor.calls[0] == ["x" * 90, "x" * 80, "x" * 70]  # longest first across chunks


def test_results_frame_counts_histogram_and_download_name():
    frame = pd.DataFrame({"review": ["a", "b", "", "c"], "verdict": ["old"] * 4})
    rows = [
        {"predicted_label": "POSITIVE", "confidence": 0.97, "p_negative": 0.03, "p_positive": 0.97, "error": ""},
        {"predicted_label": "NEGATIVE", "confidence": 0.6, "p_negative": 0.6, "p_positive": 0.4, "error": ""},
        {"predicted_label": "", "confidence": None, "error": "empty text"},
        {"predicted_label": "NEGATIVE", "confidence": 0.9, "p_negative": 0.9, "p_positive": 0.1, "error": ""},
    ]
    results = results_frame(frame, rows, threshold=0.85)
    assert list(results["verdict"]) == ["POSITIVE", UNCERTAIN, "", "NEGATIVE"]  # the old verdict column is replaced
    assert list(results.columns) == [
        "review",
        "predicted_label",
        "confidence",
        "verdict",  # right after the confidence, as the command line writes it (inference.tables.with_verdicts)
        "p_negative",
        "p_positive",
        "error",
    ]
    again = pd.read_csv(io.StringIO(results.to_csv(index=False)), keep_default_na=False)
    assert list(again["verdict"]) == ["POSITIVE", UNCERTAIN, "", "NEGATIVE"]

    counts = verdict_counts(results, ("NEGATIVE", "POSITIVE")).set_index("verdict")
    assert counts["reviews"].to_dict() == {"NEGATIVE": 1, "POSITIVE": 1, UNCERTAIN: 1, "empty row": 1}
    assert counts["share"].sum() == pytest.approx(1.0)

    histogram = confidence_histogram(results["confidence"])
    assert len(histogram) == 10 and histogram["reviews"].sum() == 3  # the empty row has no confidence
    assert histogram.set_index("confidence")["reviews"][["60%–65%", "90%–95%", "95%–100%"]].tolist() == [1, 1, 1]
    assert confidence_histogram([1.0, 0.5])["reviews"].tolist() == [1] + [0] * 8 + [1]  # both ends counted

    assert download_name("my reviews (final).csv") == "my_reviews_final_predictions.csv"
    assert download_name("../../etc/passwd") == "passwd_predictions.csv"
    assert download_name("….csv") == "reviews_predictions.csv"


def test_verdict_summary_shows_empty_rows_only_when_there_are_some():
    results = pd.DataFrame({"verdict": ["POSITIVE", UNCERTAIN, "", "NEGATIVE"]})
    shown, scored = verdict_summary(results, ("NEGATIVE", "POSITIVE"))
    assert scored == 3 and shown["verdict"].tolist() == ["NEGATIVE", "POSITIVE", UNCERTAIN, "empty row"]
    shown, scored = verdict_summary(results.iloc[[0, 1]], ("NEGATIVE", "POSITIVE"))
    assert scored == 2 and shown["verdict"].tolist() == ["NEGATIVE", "POSITIVE", UNCERTAIN]  # a zero label stays


def test_an_upload_is_parsed_once_per_content(monkeypatch):
    data = b"id,title,body\n1,Great,A long and wonderful review of a film\n"
    first = parse_upload("a.csv", data, "id-1", None)
    assert first[0] == "id-1" and first[3] == ["title", "body"] and first[4] == "body"
    monkeypatch.setattr(uploads, "read_upload", lambda *args: pytest.fail("read again"))

    def queued():  # the page's work-queue slot: entered only when a file is read
        pytest.fail("waited in line for nothing")

    assert parse_upload("a.csv", data, "id-1", first, queued) is first  # the same upload: nothing is read
    again = parse_upload("b.csv", data, "id-2", first, queued)  # the same content uploaded again: not read either
    assert again[0] == "id-2" and again[1:] == first[1:]


# ----------------------------------------------------------------------------- the logic imports without Streamlit


def test_webapp_imports_without_streamlit_or_torch():
    """The helpers the page draws are usable where Streamlit is not installed (scripts, the GPU check), and
    import no PyTorch (the page is drawn while the model loads)."""
    code = (
        "import sys; sys.modules['streamlit'] = None\n"  # any `import streamlit` now raises ImportError
        "import webapp.render as logic, webapp.runtime, webapp.uploads, webapp.results, webapp.harness\n"
        "assert logic.cap_review('x' * 30, 10) == ('x' * 10, True)\n"
        "assert not any(name == 'streamlit' or name.startswith('streamlit.') for name in sys.modules if sys.modules[name])\n"
        "assert 'torch' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
