"""Classify movie reviews as positive or negative with the trained LoRA adapter: one typed review (with
an on-demand explanation of which words drove the verdict) or a whole uploaded file.

    streamlit run app.py

The model folder is trained_model/ unless SENTIMENT_MODEL_DIR names another adapter folder. The app
only calls `Predictor` (inference/predict.py), the same path the CLI and evaluation use, so the
figures in the sidebar are the ones a user gets here.

Limits: a typed review is capped at MAX_REVIEW_CHARS (with a notice), an upload at MAX_UPLOAD_MB and
MAX_BATCH_ROWS; the app reads uploads from their bytes and never opens a path a user types.
"""

from __future__ import annotations

import html
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from inference.explain import DEFAULT_STEPS
from inference.predict import DEFAULT_MODEL_DIR, PROJECT_ROOT, EmptyTextError, Prediction, Predictor, predict_table
from training.data import DataError, read_table
from training.model import ModelLoadError

MODEL_DIR_ENV = "SENTIMENT_MODEL_DIR"
MAX_REVIEW_CHARS = 20_000  # far beyond what the model reads (its max_length tokens); keeps tokenizing instant
REVIEW_KEY = "review"
# Below this (temperature-calibrated) confidence a verdict is shown as "uncertain". On 600 reviews of
# the shipped adapter's own validation split, the 6% below 0.75 were right 58% of the time, barely
# better than a coin, those above it 95%; a neutral sentence such as "I went to work today." scores
# about 0.69. (At 0.85, 12% would be flagged, of which 69% were right: too many sound verdicts hidden.)
DEFAULT_UNCERTAIN_BELOW = 0.75
UNCERTAIN = "UNCERTAIN"
# Material icons ship with Streamlit's frontend, so they show even where no emoji font is installed.
LABEL_STYLE = {
    "POSITIVE": ("green", ":material/thumb_up:"),
    "NEGATIVE": ("red", ":material/thumb_down:"),
    UNCERTAIN: ("gray", ":material/help:"),
}

# Uploads. Keep MAX_UPLOAD_MB equal to server.maxUploadSize in .streamlit/config.toml (a test checks):
# the server refuses bigger files before the app sees them, the app checks again and says why.
MAX_UPLOAD_MB = 10
MAX_BATCH_ROWS = 5_000  # minutes on a 2-core CPU (3 to 13 reviews/s), seconds on a GPU; more: the command line
UPLOAD_TYPES = ("csv", "txt", "jsonl", "parquet")
SCORE_CHUNK = 64  # reviews per progress-bar step: a few seconds each on a 2-core CPU
BATCH_SIZE = 32
CLI_HINT = "python inference/predict.py --file reviews.csv --output predictions.csv"
BATCH_KEY = "batch_result"
UPLOAD_KEY = "upload_frame"
EXPLANATION_KEY = "explanation"

# Explanation colours: word backgrounds at most this opaque, so the text stays readable on them.
POSITIVE_RGB = (22, 163, 74)
NEGATIVE_RGB = (220, 38, 38)
MAX_ALPHA = 0.8

EXAMPLE_REVIEWS = {
    "Glowing": (
        "An absolute triumph. The performances are superb, the script is sharp and funny, and the "
        "final act had the whole audience cheering. I loved every minute and will watch it again."
    ),
    "Scathing": (
        "A tedious, badly acted mess. The plot makes no sense, the dialogue is painful, and I "
        "checked my watch every ten minutes. Two hours I will never get back."
    ),
    "Mixed": (
        "The cinematography is gorgeous and the lead gives a committed performance, but the story "
        "drags badly in the middle and the ending falls flat. Worth seeing once, perhaps."
    ),
    "Sarcastic": (
        "Oh great, another superhero sequel. Wonderful. I just adore watching the same explosion "
        "for the fortieth time while the villain explains his plan. Truly a masterpiece."
    ),
}


def model_dir_from_env() -> str:
    """The adapter folder to load: $SENTIMENT_MODEL_DIR if set, else the shipped trained_model/."""
    return os.environ.get(MODEL_DIR_ENV) or str(DEFAULT_MODEL_DIR)


@st.cache_resource(show_spinner="Loading the model (once per server)…")
def load_predictor(model_dir: str) -> Predictor:
    # Keyed by model_dir, so pointing SENTIMENT_MODEL_DIR elsewhere loads that folder, not a stale model.
    # A failed load raises and is not cached: the next rerun tries again (e.g. after a fix on disk).
    return Predictor.from_pretrained(model_dir)


# ----------------------------------------------------------------------------- pure helpers


def cap_review(text: str, max_chars: int = MAX_REVIEW_CHARS) -> tuple[str, bool]:
    """The review cut to at most `max_chars` characters, and whether it was cut.

    The middle goes, not the end: the model reads a long review's beginning and end (head+tail)."""
    if len(text) <= max_chars:
        return text, False
    head = max_chars // 2
    return text[:head] + text[len(text) - (max_chars - head) :], True


def is_uncertain(confidence: float, threshold: float) -> bool:
    return confidence < threshold


def verdict(prediction: Prediction, threshold: float) -> tuple[str, bool]:
    """What to show for a prediction: its label, or UNCERTAIN when its confidence is below `threshold`."""
    if is_uncertain(prediction.confidence, threshold):
        return UNCERTAIN, True
    return prediction.label, False


def display_path(path: str | Path) -> str:
    """A folder relative to the project when it lies inside it (shorter, and no home paths on screen)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(PROJECT_ROOT)) + "/"
    except ValueError:
        return str(path)


def describe_lora(lora: dict | None) -> str:
    if not lora:
        return "not recorded"
    return (
        f"rank {lora.get('rank', '?')}, alpha {lora.get('alpha', '?')}, "
        f"dropout {lora.get('dropout', '?')}, targets `{lora.get('targets', '?')}`"
    )


def percent(value) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) else "–"


def word_colour(score: float, strongest: float) -> str:
    """A CSS background for a word: green towards POSITIVE, red towards NEGATIVE, opacity by |score| / strongest."""
    if strongest <= 0 or score == 0:
        return "transparent"
    red, green, blue = POSITIVE_RGB if score > 0 else NEGATIVE_RGB
    alpha = MAX_ALPHA * min(abs(score) / strongest, 1.0)
    return f"rgba({red}, {green}, {blue}, {alpha:.2f})"


def escape_text(piece: str) -> str:
    """User text as HTML: every markup character escaped, line breaks kept."""
    return html.escape(piece, quote=True).replace("\r\n", "\n").replace("\n", "<br>")


def highlight_html(text: str, words) -> str:
    """The review as HTML with each attributed word's background coloured by its score.

    `words` are inference.explain.WordAttribution (text[start:end] is the word). Every piece of the
    review is escaped: it is user input. Text between words, and words the model did not read (the
    middle of a long review), stay plain.
    """
    strongest = max((abs(word.score) for word in words), default=0.0)
    parts, cursor = [], 0
    for word in sorted(words, key=lambda word: word.start):
        if word.start < cursor or word.end > len(text):
            continue  # never emit a character twice or past the end
        parts.append(escape_text(text[cursor : word.start]))
        parts.append(
            f'<span style="background-color: {word_colour(word.score, strongest)}; border-radius: 0.2rem" '
            f'title="{word.score:+.3f}">{escape_text(text[word.start : word.end])}</span>'
        )
        cursor = word.end
    parts.append(escape_text(text[cursor:]))
    return f'<div class="review-highlight" style="line-height: 1.9">{"".join(parts)}</div>'


def code_span(text: str) -> str:
    """Markdown that shows `text` literally in code style, even when it holds backticks (user input)."""
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}"


def legend_html(negative_label: str = "NEGATIVE", positive_label: str = "POSITIVE") -> str:
    """A key for highlight_html: a swatch for each direction, from strong to weak."""

    def swatch(score: float, label: str) -> str:
        return (
            f'<span style="background-color: {word_colour(score, 1.0)}; border-radius: 0.25rem; '
            f'padding: 0 0.4rem">{escape_text(label)}</span>'
        )

    return (
        '<div class="highlight-legend" style="font-size: 0.875rem; margin-bottom: 0.5rem">'
        f"{swatch(-1.0, f'towards {negative_label}')} {swatch(-0.4, 'weakly')} &nbsp;"
        f"{swatch(0.4, 'weakly')} {swatch(1.0, f'towards {positive_label}')}"
        " &nbsp;Colour strength is relative to this review's most influential word.</div>"
    )


# ----------------------------------------------------------------------------- uploads (pure but for a temp file)


def upload_suffix(name: str) -> str:
    """The upload's type from its name (".csv"), or a DataError naming the types the app reads."""
    suffix = Path(name).suffix.lower()
    if suffix.lstrip(".") not in UPLOAD_TYPES:
        raise DataError(
            f"{name}: the app reads {', '.join('.' + kind for kind in UPLOAD_TYPES)} files, not "
            f"'{suffix or '(no extension)'}'."
        )
    return suffix


def read_upload(name: str, data: bytes, text_column: str | None = None) -> pd.DataFrame:
    """An uploaded file's rows, read by training.data.read_table from a private temporary copy.

    Only the upload's bytes and the type at the end of its name are used: no path a user gives is
    ever opened. Errors name the upload, not the temporary file. `text_column=None` reads every
    column as it is (to choose from); a column name reads that column as text.
    """
    suffix = upload_suffix(name)
    if len(data) > MAX_UPLOAD_MB * 1024 * 1024:
        raise DataError(f"{name} is {len(data) / 2**20:.1f} MB; the app reads files of up to {MAX_UPLOAD_MB} MB.")
    with tempfile.TemporaryDirectory(prefix="sentiment_upload_") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            frame = read_table(path, text_column=text_column)
        except DataError as error:
            raise DataError(str(error).replace(str(path), name)) from error
    if len(frame) == 0:
        raise DataError(f"{name} has no rows.")
    if len(frame) > MAX_BATCH_ROWS:
        raise DataError(
            f"{name} has {len(frame):,} rows; the app scores at most {MAX_BATCH_ROWS:,} at a time. "
            f"Split the file, or score it from the command line: `{CLI_HINT}`"
        )
    return frame


def text_columns(frame: pd.DataFrame) -> list:
    """The columns that hold text in at least one row (numbers and empty columns are not reviews)."""
    return [
        column for column in frame.columns
        if frame[column].map(lambda value: isinstance(value, str) and value.strip() != "").any()
    ]


def guess_text_column(frame: pd.DataFrame, candidates: list):
    """"text" if there is such a column, else the one with the longest texts on average."""
    if "text" in candidates:
        return "text"
    return max(candidates, key=lambda column: frame[column].map(lambda value: len(value) if isinstance(value, str) else 0).mean())


def score_texts(
    predictor: Predictor,
    texts: list[str],
    on_progress: Callable[[int, int], None] | None = None,
    chunk_size: int = SCORE_CHUNK,
) -> list[dict]:
    """predict_table's rows for `texts`, in order, scored `chunk_size` at a time to report progress.

    The texts go longest first across chunks, as Predictor does within a call, so each batch still pads
    to similar lengths (on 200 test reviews, chunks of 64 were as fast as one call, within this
    machine's run-to-run noise).
    """
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    rows: list[dict | None] = [None] * len(texts)
    for start in range(0, len(order), chunk_size):
        chosen = order[start : start + chunk_size]
        for index, row in zip(chosen, predict_table(predictor, [texts[i] for i in chosen], BATCH_SIZE, progress=False)):
            rows[index] = row
        if on_progress is not None:
            on_progress(min(start + chunk_size, len(texts)), len(texts))
    return rows


def results_frame(frame: pd.DataFrame, rows: list[dict], threshold: float) -> pd.DataFrame:
    """The upload's columns followed by the predictions and a `verdict` at `threshold` ("" for empty rows)."""
    predictions = pd.DataFrame(rows)
    predictions.insert(
        predictions.columns.get_loc("error"),
        "verdict",
        [
            "" if row["error"] else (UNCERTAIN if is_uncertain(row["confidence"], threshold) else row["predicted_label"])
            for row in rows
        ],
    )
    # Columns from an earlier run's output are replaced, so a results file can be scored again.
    kept = frame.drop(columns=[column for column in predictions.columns if column in frame.columns])
    return pd.concat([kept.reset_index(drop=True), predictions], axis=1)


def verdict_counts(results: pd.DataFrame, labels: tuple[str, ...]) -> pd.DataFrame:
    """Reviews per verdict (each label, UNCERTAIN, empty), with their share of all rows."""
    names = [*labels, UNCERTAIN, ""]
    counts = [int((results["verdict"] == name).sum()) for name in names]
    return pd.DataFrame(
        {
            "verdict": [name or "empty row" for name in names],
            "reviews": counts,
            "share": [count / max(len(results), 1) for count in counts],
        }
    )


def confidence_histogram(confidences, bin_width: float = 0.05) -> pd.DataFrame:
    """Counts of confidences in bins of `bin_width` from 50% to 100% (a two-label model never goes below 50%)."""
    edges = np.round(np.arange(0.5, 1.0 + bin_width / 2, bin_width), 6)
    values = np.clip(np.asarray([value for value in confidences if value is not None and value == value], float), 0.5, 1.0)
    counts, _ = np.histogram(values, bins=edges)
    return pd.DataFrame(
        {
            "confidence": [f"{low:.0%}–{high:.0%}" for low, high in zip(edges[:-1], edges[1:])],
            "low": edges[:-1],
            "high": edges[1:],
            "reviews": counts,
        }
    )


def download_name(upload_name: str) -> str:
    """A safe file name for the results: the upload's stem (letters, digits, - and _ only) + _predictions.csv."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(upload_name).stem).strip("_") or "reviews"
    return f"{stem[:60]}_predictions.csv"


# ----------------------------------------------------------------------------- UI pieces


def sidebar_ui(info: dict) -> None:
    """What is loaded and where it runs, with the metrics the adapter was shipped with."""
    sidebar = st.sidebar
    sidebar.header("Model")
    # A box, not st.metric: a GPU's name ("GPU: NVIDIA H100 80GB HBM3") wraps here instead of being cut off.
    sidebar.success(f"Running on **{info['device']}**", icon=":material/memory:")
    sidebar.markdown(
        "\n".join(
            [
                f"- **Base model:** `{info['base_model']}`",
                f"- **Adapter:** `{display_path(info['adapter'])}`",
                f"- **Max length:** {info['max_length']} tokens",
                f"- **Truncation:** `{info['truncation']}`",
                f"- **LoRA:** {describe_lora(info['lora'])}",
            ]
        )
    )
    metrics = info["metrics"] or {}
    sidebar.subheader("Recorded metrics")
    shown = False
    for split, title in (("validation", "Validation"), ("test", "Test")):
        scores = metrics.get(split)
        if not scores:
            continue
        shown = True
        size = f" ({scores['num_examples']:,} reviews)" if "num_examples" in scores else ""
        sidebar.caption(f"{title}{size}")
        accuracy, f1 = sidebar.columns(2)
        accuracy.metric("Accuracy", percent(scores.get("accuracy")))
        f1.metric("F1", percent(scores.get("f1")))
    if not shown:
        sidebar.caption("No metrics were recorded with this adapter.")


def threshold_ui(temperature: float) -> float:
    """The confidence below which a verdict is shown as uncertain (0.5 to 0.99)."""
    st.sidebar.header("Verdict")
    calibration = f"temperature-scaled (T = {temperature:.2f})" if temperature != 1.0 else "not temperature-scaled"
    percent_value = st.sidebar.slider(
        "Uncertain below this confidence (%)",
        min_value=50,
        max_value=99,
        value=round(DEFAULT_UNCERTAIN_BELOW * 100),
        key="uncertain_below",
        help=(
            "A prediction less confident than this is shown as UNCERTAIN with the label it leans to. "
            f"Below the default {DEFAULT_UNCERTAIN_BELOW:.0%}, the shipped model was right only 58% of the "
            f"time on its validation reviews. Confidences here are {calibration}."
        ),
    )
    return percent_value / 100


def examples_ui() -> None:
    """Buttons that fill the text box with an example review."""
    st.caption("Try an example:")
    for column, (name, text) in zip(st.columns(len(EXAMPLE_REVIEWS)), EXAMPLE_REVIEWS.items()):
        column.button(name, on_click=fill_review, args=(text,), width="stretch", key=f"example_{name}")


def fill_review(text: str) -> None:
    # Runs before the rerun, so the text area below is created with the new value.
    st.session_state[REVIEW_KEY] = text


def review_ui() -> str:
    """The review as typed (uncapped; cap_review caps it). Only ever classified as text, never opened as a path."""
    st.session_state.setdefault(REVIEW_KEY, "")
    text = st.text_area(
        "Movie review",
        key=REVIEW_KEY,
        height=180,
        placeholder="Type or paste a movie review, then press Ctrl+Enter or click Predict.",
    )
    left, right = st.columns([3, 1])
    left.caption(f"{len(text):,} characters (up to {MAX_REVIEW_CHARS:,} are used)")
    right.button("Predict", type="primary", width="stretch")  # a rerun is all it takes
    return text


def result_ui(prediction: Prediction, threshold: float, elapsed_ms: float, device: str) -> None:
    shown, uncertain = verdict(prediction, threshold)
    color, icon = LABEL_STYLE.get(shown, ("blue", ":material/movie:"))
    result = st.container(border=True)
    label, confidence = result.columns([3, 2], vertical_alignment="center")
    label.markdown(f"## :{color}[{icon} {shown}]")
    if uncertain:
        label.caption(f"Leans {prediction.label}, below the {threshold:.0%} confidence set for a verdict.")
    confidence.metric("Confidence", f"{prediction.confidence:.1%}")
    for name, probability in sorted(prediction.probabilities.items(), key=lambda item: -item[1]):
        result.progress(probability, text=f"{name}: {probability:.1%}")
    result.caption(f"Predicted in {elapsed_ms:.0f} ms on {device}")


def explain_ui(predictor: Predictor, text: str) -> None:
    """On request, the review with its words coloured by how they pushed the prediction (seconds on a CPU)."""
    stored = st.session_state.get(EXPLANATION_KEY)
    if stored is None or stored[0] != text:  # none yet, or one for an earlier review
        slot = st.empty()
        if not slot.button("Why? Explain this prediction", icon=":material/lightbulb:", key="explain"):
            return
        slot.empty()  # the button goes once its explanation is on its way
        with st.spinner(f"Weighing each word (Integrated Gradients: {DEFAULT_STEPS} passes through the model, up to a minute on a CPU)…"):
            started = time.perf_counter()
            try:
                explanation = predictor.explain(text, n_steps=DEFAULT_STEPS)
            except ImportError as error:  # captum missing: an install problem, not a crash
                st.error(f"Explanations need the `{error.name or 'captum'}` package: `pip install -r requirements.txt`.")
                return
            stored = (text, explanation, time.perf_counter() - started)
        st.session_state[EXPLANATION_KEY] = stored
    _, explanation, elapsed_s = stored
    negative_label, positive_label = predictor.labels
    box = st.container(border=True)
    box.markdown("**Why:** each word's colour shows which way it pushed the prediction, and how hard.")
    box.html(legend_html(negative_label, positive_label) + highlight_html(explanation.text, explanation.words))
    towards_negative, towards_positive = box.columns(2)
    for column, direction, label in ((towards_positive, "positive", positive_label), (towards_negative, "negative", negative_label)):
        top = explanation.top(5, direction)
        column.markdown(f"**Towards {label}**")
        column.markdown("\n".join(f"- {code_span(word.word)} {word.score:+.2f}" for word in top) or "(no word)")
    note = " Only the beginning and end of this long review were read, and only they are coloured." if getattr(explanation, "truncated", False) else ""
    box.caption(
        f"Integrated Gradients on the word embeddings, relative to an empty review; scores in logit units "
        f"add up to {explanation.prediction_minus_baseline:+.2f} (integration error {explanation.convergence_delta:+.3f}). "
        f"Explained in {elapsed_s:.1f} s on {predictor.device_name}.{note}"
    )


def single_review_ui(predictor: Predictor, threshold: float) -> None:
    examples_ui()
    text, was_truncated = cap_review(review_ui())
    if was_truncated:
        st.warning(
            f"Your review is longer than {MAX_REVIEW_CHARS:,} characters; its first and last {MAX_REVIEW_CHARS // 2:,} were used."
        )
    try:
        started = time.perf_counter()
        prediction = predictor.predict_one(text)
        elapsed_ms = (time.perf_counter() - started) * 1000
    except EmptyTextError:
        st.info("Type or paste a review above (or pick an example) to see its sentiment.")
        return
    result_ui(prediction, threshold, elapsed_ms, predictor.device_name)
    explain_ui(predictor, text)


def upload_ui() -> tuple[str, bytes, str] | None:
    """The uploaded file as (name, bytes, id), or None."""
    upload = st.file_uploader(
        f"A file of reviews: .csv, .jsonl or .parquet with a column of text, or .txt with one review a line "
        f"(up to {MAX_UPLOAD_MB} MB and {MAX_BATCH_ROWS:,} reviews)",
        type=list(UPLOAD_TYPES),
        key="upload",
    )
    if upload is None:
        return None
    return upload.name, upload.getvalue(), upload.file_id


def column_ui(frame: pd.DataFrame, name: str):
    """The column holding the reviews, chosen by the user among the text columns; None if there is none."""
    candidates = text_columns(frame)
    if not candidates:
        columns = ", ".join(map(str, frame.columns))
        st.error(f"{name} has no column of text (columns: {columns}). Upload a file with the reviews in one column.")
        return None
    return st.selectbox(
        "Column holding the reviews",
        candidates,
        index=candidates.index(guess_text_column(frame, candidates)),
        format_func=str,
        key="text_column",
    )


def batch_results_ui(stored: dict, labels: tuple[str, ...], threshold: float) -> None:
    results = results_frame(stored["frame"], stored["rows"], threshold)
    counts = verdict_counts(results, labels)
    scored = len(results) - int(counts.loc[counts["verdict"] == "empty row", "reviews"].iloc[0])
    st.caption(
        f"Scored {scored:,} reviews in {stored['elapsed_s']:.1f} s on {stored['device']} "
        f"({scored / max(stored['elapsed_s'], 1e-9):.1f} reviews/s)."
    )
    shown = counts[(counts["reviews"] > 0) | (counts["verdict"] != "empty row")]  # empty rows only when there are some
    for column, row in zip(st.columns(len(shown)), shown.itertuples()):
        column.metric(f"{row.verdict} ({row.reviews:,})", f"{row.share:.0%}")

    import altair as alt  # Streamlit's own chart library; imported here, only when there is something to plot

    colours = alt.Scale(
        domain=[*labels, UNCERTAIN, "empty row"],
        range=["#dc2626", "#16a34a", "#9ca3af", "#e5e7eb"] if len(labels) == 2 else alt.Undefined,
    )
    shares, histogram = st.columns(2)
    shares.markdown("**Verdicts**")
    shares.altair_chart(
        alt.Chart(shown).mark_bar().encode(
            x=alt.X("verdict:N", sort=None, title=None, axis=alt.Axis(labelAngle=0)),
            y=alt.Y("share:Q", axis=alt.Axis(format="%"), title="share of rows"),
            color=alt.Color("verdict:N", scale=colours, legend=None),
            tooltip=["verdict", "reviews", alt.Tooltip("share:Q", format=".1%")],
        ).properties(height=240),
        width="stretch",
    )
    bins = confidence_histogram(results["confidence"])
    bins["side"] = np.where(bins["low"] + 1e-9 < threshold, "below the threshold", "at or above")
    histogram.markdown("**Confidence**")
    histogram.altair_chart(
        alt.Chart(bins).mark_bar().encode(
            x=alt.X("low:Q", bin=alt.Bin(binned=True, step=0.05), axis=alt.Axis(format="%", labelAngle=0), title=None),
            x2="high:Q",
            y=alt.Y("reviews:Q", title="reviews"),
            color=alt.Color(
                "side:N",
                scale=alt.Scale(domain=["below the threshold", "at or above"], range=["#9ca3af", "#2563eb"]),
                legend=alt.Legend(orient="bottom", title=None),
            ),
            tooltip=["confidence", "reviews"],
        ).properties(height=240),
        width="stretch",
    )
    predicted = [column for column in ("verdict", "predicted_label", "confidence") if column in results.columns]
    st.dataframe(
        results,
        hide_index=True,
        width="stretch",
        column_order=[*predicted, *(column for column in results.columns if column not in predicted)],
        column_config={
            "confidence": st.column_config.ProgressColumn("confidence", format="percent", min_value=0.0, max_value=1.0),
            stored["column"]: st.column_config.TextColumn(width="large"),
        },
    )
    st.download_button(
        "Download the results (CSV)",
        data=results.to_csv(index=False).encode("utf-8"),
        file_name=download_name(stored["name"]),
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",  # no rerun: the results stay as they are
        key="download",
    )


def parsed_upload(name: str, data: bytes, upload_id: str) -> pd.DataFrame:
    """read_upload's frame, parsed once per uploaded file and session rather than on every rerun."""
    cached = st.session_state.get(UPLOAD_KEY)
    if cached is None or cached[0] != upload_id:
        cached = (upload_id, read_upload(name, data))
        st.session_state[UPLOAD_KEY] = cached
    return cached[1]


def batch_ui(predictor: Predictor, threshold: float) -> None:
    """Upload a file, pick its text column, score it with a progress bar, see and download the results."""
    upload = upload_ui()
    if upload is None:
        for key in (UPLOAD_KEY, BATCH_KEY):  # a removed file's rows do not stay in the session
            st.session_state.pop(key, None)
        st.caption(f"Results come back as a table, charts and a CSV. For bigger files: `{CLI_HINT}`")
        return
    name, data, upload_id = upload
    try:
        frame = parsed_upload(name, data, upload_id)
    except DataError as error:
        st.error(str(error))
        return
    column = column_ui(frame, name)
    if column is None:
        return
    key = (upload_id, column)
    if st.button(f"Score {len(frame):,} reviews", type="primary", icon=":material/play_arrow:", key="score"):
        frame = read_upload(name, data, text_column=column)  # the chosen column read as text, as the CLI does
        texts = frame[column].tolist()
        if not any(text.strip() for text in texts):
            st.error(f"Every row of '{column}' is empty; choose the column holding the reviews.")
            return
        bar = st.progress(0.0, text="Scoring…")
        started = time.perf_counter()
        rows = score_texts(
            predictor, texts, on_progress=lambda done, total: bar.progress(done / total, text=f"Scored {done:,} of {total:,} reviews")
        )
        st.session_state[BATCH_KEY] = {
            "key": key, "name": name, "column": column, "frame": frame, "rows": rows,
            "elapsed_s": time.perf_counter() - started, "device": predictor.device_name,
        }
    stored = st.session_state.get(BATCH_KEY)
    if stored is not None and stored["key"] == key:  # results for this file and column, not an earlier one
        batch_results_ui(stored, predictor.labels, threshold)


def main() -> None:
    st.set_page_config(page_title="Movie review sentiment", page_icon=":material/movie:")
    st.title(":material/movie: Movie review sentiment")
    st.write("Paste a movie review, or upload a file of them, and a LoRA-tuned transformer tells you whether each is positive or negative.")

    try:
        predictor = load_predictor(model_dir_from_env())
    except ModelLoadError as error:
        st.error(f"The model could not be loaded. {error}")
        st.stop()
    info = predictor.info()
    sidebar_ui(info)
    threshold = threshold_ui(info.get("temperature", 1.0))

    one, many = st.tabs([":material/edit_note: One review", ":material/upload_file: Many reviews (file)"])
    with one:
        single_review_ui(predictor, threshold)
    with many:
        batch_ui(predictor, threshold)


if __name__ == "__main__":
    main()
