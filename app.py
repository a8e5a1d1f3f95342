"""Classify movie reviews with the trained LoRA adapter (positive or negative for the shipped one, any label
set an adapter was trained on): one typed review (with an on-demand explanation of which words drove the
verdict) or a whole uploaded file.

    streamlit run app.py

The model folder is trained_model/ unless SENTIMENT_MODEL_DIR names another adapter folder. The app
only calls `Predictor` (inference/predict.py), the same path the CLI and evaluation use, so the
figures in the sidebar are the ones a user gets here.

Limits: a typed review is capped at MAX_REVIEW_CHARS (with a notice), an upload at MAX_UPLOAD_MB and
MAX_BATCH_ROWS; the app reads uploads from their bytes and never opens a path a user types.

This file is the page: main() and small *_ui() functions. The logic behind it (limits, verdicts, the
explanation's HTML, uploads and their results) lives in inference/app_logic.py, which needs no Streamlit.

It is also the server: `streamlit run app.py` finds `app = st.App(...)` at the bottom and serves this file as
the page through it. Its start-up hook (`server_lifespan`) starts loading the model in a background thread
before the first visitor arrives, and `GET /api/ready` answers 200 once the model can answer (503 while it
loads or after a failed load): the readiness check. The page imports nothing that pulls in PyTorch until
the model is there, so it is drawn at once while the model loads.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import streamlit as st

from inference import app_logic
from inference.app_logic import (
    CLI_HINT,
    DEFAULT_UNCERTAIN_BELOW,
    EXAMPLE_REVIEWS,
    MAX_BATCH_ROWS,
    MAX_REVIEW_CHARS,
    MAX_TYPED_CHARS,
    MAX_UPLOAD_MB,
    UNCERTAIN,
    UPLOAD_TYPES,
    Busy,
    cap_review,
    code_span,
    confidence_histogram,
    describe_lora,
    display_path,
    download_name,
    guess_text_column,
    highlight_html,
    legend_html,
    model_dir_from_env,
    model_loader,
    page_intro,
    percent,
    read_upload,
    results_frame,
    score_texts,
    text_columns,
    threshold_range,
    upload_digest,
    verdict,
    verdict_colours,
    verdict_counts,
)
from training.data import DataError, spreadsheet_safe
from training.failures import write_traceback

if TYPE_CHECKING:  # the modules behind these import torch: imported where used, once the model is there
    from inference.predict import Prediction, Predictor

REVIEW_KEY = "review"
BATCH_KEY = "batch_result"
UPLOAD_KEY = "upload_frame"
EXPLANATION_KEY = "explanation"
POLL_KEY = "polling_the_model"  # set before a rerun that only checks whether the model has loaded
LOAD_POLL_S = 0.5
METRICS_PER_ROW = 6  # verdict counts side by side; more labels wrap onto further rows
LOADING_MESSAGE = "Loading the model (once per server)… Type a review or upload a file meanwhile: it is scored as soon as the model is ready."
LOGGER = logging.getLogger("sentiment_app")
# Material icons ship with Streamlit's frontend, so they show even where no emoji font is installed.
LABEL_STYLE = {
    "POSITIVE": ("green", ":material/thumb_up:"),
    "NEGATIVE": ("red", ":material/thumb_down:"),
    UNCERTAIN: ("gray", ":material/help:"),
}


def log_unexpected(what: str, error: BaseException) -> None:
    """The traceback to a log file and the server's log; the visitor sees one line (no server paths)."""
    LOGGER.error("%s failed: %s: %s (traceback in %s)", what, type(error).__name__, error, write_traceback(what, error))


def queue_notice(slot, what: str):
    """on_wait for the heavy-work queue: show the visitor where they are in line."""
    return lambda position: slot.info(
        f"Busy: {app_logic.HEAVY_WORK.running} job(s) running. {what} is number {position} in line and starts "
        f"automatically (up to {app_logic.HEAVY_WORK.wait_s:.0f} s).",
        icon=":material/hourglass_top:",
    )


# ----------------------------------------------------------------------------- UI pieces


def sidebar_ui(info: dict, labels: tuple[str, ...]) -> None:
    """What is loaded and where it runs, with the metrics the adapter was shipped with."""
    from training.model import metrics_unreadable

    sidebar = st.sidebar
    sidebar.header("Model")
    # A box, not st.metric: a GPU's name ("GPU: NVIDIA H100 80GB HBM3") wraps here instead of being cut off.
    # info["device"] is Predictor.info()'s label (training.model.describe_device), the one the GPU check reads too.
    sidebar.success(f"Running on **{info['device']}**", icon=":material/memory:")
    sidebar.markdown(
        "\n".join(
            [
                f"- **Base model:** `{info['base_model']}`",
                f"- **Adapter:** `{display_path(info['adapter'])}`",
                f"- **Max length:** {info['max_length']} tokens",
                f"- **Truncation:** `{info['truncation']}`",
                f"- **LoRA:** {describe_lora(info['lora'])}",
                *([] if len(labels) == 2 else [f"- **Labels:** {', '.join(map(code_span, labels))}"]),
            ]
        )
    )
    metrics = info["metrics"] or {}
    f1_name = "F1" if len(labels) == 2 else "Macro F1"  # with N labels the recorded f1 is the macro average
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
        f1.metric(f1_name, percent(scores.get("f1")))
    if not shown and metrics_unreadable(info["adapter"]):
        sidebar.caption("Recorded metrics are unavailable: the adapter's metrics.json could not be read.")
    elif not shown:
        sidebar.caption("No metrics were recorded with this adapter.")


def threshold_ui(temperature: float, n_labels: int = 2) -> float:
    """The confidence below which a verdict is shown as uncertain: from 1/N (50% for two labels) to 99%."""
    st.sidebar.header("Verdict")
    calibration = f"temperature-scaled (T = {temperature:.2f})" if temperature != 1.0 else "not temperature-scaled"
    low, high, default = threshold_range(n_labels)
    why = (
        f"Below the default {DEFAULT_UNCERTAIN_BELOW:.0%}, the shipped model was right only 58% of the "
        "time on its validation reviews."
        if n_labels == 2
        else f"With {n_labels} labels the top label's probability is at least {1 / n_labels:.0%}."
    )
    percent_value = st.sidebar.slider(
        "Uncertain below this confidence (%)",
        min_value=low,
        max_value=high,
        value=default,
        key="uncertain_below",
        help=(
            "A prediction less confident than this is shown as UNCERTAIN with the label it leans to. "
            f"{why} Confidences here are {calibration}."
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
        max_chars=MAX_TYPED_CHARS,
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
    from inference.explain import DEFAULT_STEPS

    stored = st.session_state.get(EXPLANATION_KEY)
    if stored is None or stored[0] != text:  # none yet, or one for an earlier review
        slot = st.empty()
        if not slot.button("Why? Explain this prediction", icon=":material/lightbulb:", key="explain"):
            return
        slot.empty()  # the button goes once its explanation is on its way
        notice = st.empty()
        try:
            with app_logic.HEAVY_WORK.slot("your explanation", on_wait=queue_notice(notice, "Your explanation")):
                notice.empty()
                with st.spinner(
                    f"Weighing each word (Integrated Gradients: {DEFAULT_STEPS} passes through the model, up to a minute on a CPU)…"
                ):
                    started = time.perf_counter()
                    explanation = predictor.explain(
                        text, n_steps=DEFAULT_STEPS, tokens_per_pass=app_logic.EXPLAIN_TOKENS_PER_PASS
                    )
        except Busy as error:
            notice.warning(str(error), icon=":material/hourglass_disabled:")
            return
        except ImportError as error:  # captum missing: an install problem, not a crash
            notice.error(
                f"Explanations need the `{error.name or 'captum'}` package: `pip install -r requirements.txt`."
            )
            return
        except Exception as error:  # the prediction above stands; the explanation alone failed
            log_unexpected("explanation", error)
            notice.error(
                f"The explanation failed ({type(error).__name__}); the details are in the server's log. "
                "The prediction above stands."
            )
            return
        stored = (text, explanation, time.perf_counter() - started)
        st.session_state[EXPLANATION_KEY] = stored
    _, explanation, elapsed_s = stored
    # Two labels: towards the second (POSITIVE) or the first, whatever the prediction. More: towards the predicted
    # label or away from it, towards the others (its logit against the mean of theirs; inference/explain.py).
    negative_label, positive_label = explanation.away, explanation.towards
    binary = len(predictor.labels) == 2
    box = st.container(border=True)
    box.markdown(
        "**Why:** each word's colour shows which way it pushed the prediction, and how hard."
        if binary
        else f"**Why {explanation.label}:** each word's colour shows whether it pushed towards "
        f"{explanation.label} or away from it, towards the other labels, and how hard."
    )
    box.html(legend_html(negative_label, positive_label) + highlight_html(explanation.text, explanation.words))
    towards_negative, towards_positive = box.columns(2)
    for column, direction, label in (
        (towards_positive, "positive", positive_label),
        (towards_negative, "negative", negative_label),
    ):
        top = explanation.top(5, direction)
        column.markdown(f"**Towards {label}**")
        column.markdown("\n".join(f"- {code_span(word.word)} {word.score:+.2f}" for word in top) or "(no word)")
    note = (
        " Only the beginning and end of this long review were read, and only they are coloured."
        if getattr(explanation, "truncated", False)
        else ""
    )
    target = "" if binary else f" of {explanation.target}"
    box.caption(
        f"Integrated Gradients on the word embeddings, relative to an empty review; scores in logit units{target} "
        f"add up to {explanation.prediction_minus_baseline:+.2f} (integration error {explanation.convergence_delta:+.3f}). "
        f"Explained in {elapsed_s:.1f} s on {predictor.device_name}.{note}"
    )


def single_review_ui(predictor: Predictor | None, threshold: float) -> None:
    examples_ui()
    text, was_truncated = cap_review(review_ui())
    if was_truncated:
        st.warning(
            f"Your review is longer than {MAX_REVIEW_CHARS:,} characters; its first and last {MAX_REVIEW_CHARS // 2:,} were used."
        )
    if predictor is None:  # still loading: the box is usable, the prediction comes once the model is ready
        return
    from inference.predict import EmptyTextError

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


def column_ui(frame: pd.DataFrame, name: str, candidates: list, guess):
    """The column holding the reviews, chosen by the user among the text columns; None if there is none."""
    if not candidates:
        columns = ", ".join(map(str, frame.columns))
        st.error(f"{name} has no column of text (columns: {columns}). Upload a file with the reviews in one column.")
        return None
    return st.selectbox(
        "Column holding the reviews",
        candidates,
        index=candidates.index(guess),
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
    rows = list(shown.itertuples())
    for start in range(0, len(rows), METRICS_PER_ROW):  # many labels: several rows of metrics
        for column, row in zip(
            st.columns(METRICS_PER_ROW if len(rows) > METRICS_PER_ROW else len(rows)),
            rows[start : start + METRICS_PER_ROW],
        ):
            column.metric(f"{row.verdict} ({row.reviews:,})", f"{row.share:.0%}")

    import altair as alt  # Streamlit's own chart library; imported here, only when there is something to plot

    colours = alt.Scale(domain=[*labels, UNCERTAIN, "empty row"], range=verdict_colours(labels) or alt.Undefined)
    shares, histogram = st.columns(2)
    shares.markdown("**Verdicts**")
    shares.altair_chart(
        alt.Chart(shown)
        .mark_bar()
        .encode(
            x=alt.X("verdict:N", sort=None, title=None, axis=alt.Axis(labelAngle=0)),
            y=alt.Y("share:Q", axis=alt.Axis(format="%"), title="share of rows"),
            color=alt.Color("verdict:N", scale=colours, legend=None),
            tooltip=["verdict", "reviews", alt.Tooltip("share:Q", format=".1%")],
        )
        .properties(height=240),
        width="stretch",
    )
    bins = confidence_histogram(results["confidence"], n_labels=len(labels))
    bins["side"] = np.where(bins["low"] + 1e-9 < threshold, "below the threshold", "at or above")
    histogram.markdown("**Confidence**")
    histogram.altair_chart(
        alt.Chart(bins)
        .mark_bar()
        .encode(
            x=alt.X("low:Q", bin=alt.Bin(binned=True, step=0.05), axis=alt.Axis(format="%", labelAngle=0), title=None),
            x2="high:Q",
            y=alt.Y("reviews:Q", title="reviews"),
            color=alt.Color(
                "side:N",
                scale=alt.Scale(domain=["below the threshold", "at or above"], range=["#9ca3af", "#2563eb"]),
                legend=alt.Legend(orient="bottom", title=None),
            ),
            tooltip=["confidence", "reviews"],
        )
        .properties(height=240),
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
        # Cells starting with =, +, -, @, tab or CR are quoted: a spreadsheet would run them as formulas.
        data=spreadsheet_safe(results).to_csv(index=False).encode("utf-8"),
        file_name=download_name(stored["name"]),
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",  # no rerun: the results stay as they are
        key="download",
    )


def parsed_upload(name: str, data: bytes, upload_id: str) -> tuple[pd.DataFrame, list, object]:
    """read_upload's frame, its text columns and the guessed review column: worked out once per uploaded file
    (its content's hash) and session, not on every rerun (a wide file made every click take seconds)."""
    cached = st.session_state.get(UPLOAD_KEY)
    if cached is None or cached[0] != upload_id:
        digest = upload_digest(data)
        if cached is None or cached[1] != digest:
            frame = read_upload(name, data)
            candidates = text_columns(frame)
            cached = (
                upload_id,
                digest,
                frame,
                candidates,
                guess_text_column(frame, candidates) if candidates else None,
            )
        else:
            cached = (upload_id, *cached[1:])
        st.session_state[UPLOAD_KEY] = cached
    return cached[2], cached[3], cached[4]


def batch_ui(predictor: Predictor | None, threshold: float) -> None:
    """Upload a file, pick its text column, score it with a progress bar, see and download the results."""
    upload = upload_ui()
    if upload is None:
        for key in (UPLOAD_KEY, BATCH_KEY):  # a removed file's rows do not stay in the session
            st.session_state.pop(key, None)
        st.caption(f"Results come back as a table, charts and a CSV. For bigger files: `{CLI_HINT}`")
        return
    name, data, upload_id = upload
    try:
        frame, candidates, guess = parsed_upload(name, data, upload_id)
    except DataError as error:
        st.error(str(error))
        return
    column = column_ui(frame, name, candidates, guess)
    if column is None:
        return
    key = (upload_id, column)
    if predictor is None:
        st.button(f"Score {len(frame):,} reviews", icon=":material/play_arrow:", key="score", disabled=True)
        st.caption("Scoring starts once the model has loaded.")
        return
    if st.button(f"Score {len(frame):,} reviews", type="primary", icon=":material/play_arrow:", key="score"):
        frame = read_upload(name, data, text_column=column)  # the chosen column read as text, as the CLI does
        texts = frame[column].tolist()
        if not any(text.strip() for text in texts):
            st.error(f"Every row of '{column}' is empty; choose the column holding the reviews.")
            return
        notice = st.empty()
        try:
            with app_logic.HEAVY_WORK.slot("your file", on_wait=queue_notice(notice, "Your file")):
                notice.empty()
                bar = st.progress(0.0, text="Scoring…")
                started = time.perf_counter()
                rows = score_texts(
                    predictor,
                    texts,
                    on_progress=lambda done, total: bar.progress(
                        done / total, text=f"Scored {done:,} of {total:,} reviews"
                    ),
                )
        except Busy as error:
            notice.warning(str(error), icon=":material/hourglass_disabled:")
            return
        st.session_state[BATCH_KEY] = {
            "key": key,
            "name": name,
            "column": column,
            "frame": frame,
            "rows": rows,
            "elapsed_s": time.perf_counter() - started,
            "device": predictor.device_name,
        }
    stored = st.session_state.get(BATCH_KEY)
    if stored is not None and stored["key"] == key:  # results for this file and column, not an earlier one
        batch_results_ui(stored, predictor.labels, threshold)


def main() -> None:
    st.set_page_config(page_title="Movie review sentiment", page_icon=":material/movie:")
    try:
        page()
    except Exception as error:  # the one top-level catch: a line for the visitor, the traceback in the server's log
        log_unexpected("app", error)
        st.error(
            f"Something unexpected went wrong ({type(error).__name__}); it has been logged on the server. "
            "Reload the page to try again."
        )


def page() -> None:
    st.title(":material/movie: Movie review sentiment")
    # One loader per adapter folder per server, shared by every session (so SENTIMENT_MODEL_DIR elsewhere loads that
    # folder, not a stale model); started when the server starts (server_lifespan), else on this first visit.
    loader = model_loader(model_dir_from_env())
    if not st.session_state.pop(POLL_KEY, False):  # a visit or a click, not a poll: a failed load is tried again
        loader.retry()
    st.write(page_intro(loader.predictor.labels if loader.predictor is not None else None))
    if loader.state == "failed":
        from training.model import ModelLoadError

        if isinstance(loader.error, ModelLoadError):
            st.error(f"The model could not be loaded. {loader.error}")
        else:
            log_unexpected("model loading", loader.error)
            st.error(
                f"The model could not be loaded ({type(loader.error).__name__}); the details are in the server's log."
            )
        st.stop()
    predictor = loader.predictor
    if predictor is None:
        st.info(LOADING_MESSAGE, icon=":material/hourglass_top:")  # the page's "not ready yet" state
        threshold = threshold_ui(1.0)
    else:
        info = predictor.info()
        sidebar_ui(info, predictor.labels)  # "Running on …" in the sidebar: the page's "ready" state
        threshold = threshold_ui(info.get("temperature", 1.0), len(predictor.labels))

    one, many = st.tabs([":material/edit_note: One review", ":material/upload_file: Many reviews (file)"])
    with one:
        single_review_ui(predictor, threshold)
    with many:
        batch_ui(predictor, threshold)
    if predictor is None:  # poll: rerun once the model is ready (or every LOAD_POLL_S), keeping what was typed
        loader.wait(LOAD_POLL_S)
        st.session_state[POLL_KEY] = True
        st.rerun()


# ----------------------------------------------------------------------------- the server (streamlit run app.py)


@contextlib.asynccontextmanager
async def server_lifespan(_app):
    """Runs as the server starts, before it answers: starts loading the model in a background thread and returns
    at once, so the health check and the page come within a second or two while the model loads."""
    app_logic.limit_malloc_arenas()
    model_loader(model_dir_from_env())
    yield


async def ready_endpoint(_request):
    """GET /api/ready: 200 and {"state": "ready", ...} once the model answers; 503 while it loads or if it failed."""
    from starlette.responses import JSONResponse

    answer = model_loader(model_dir_from_env()).readiness()
    return JSONResponse(answer, status_code=200 if answer["state"] == "ready" else 503)


READY_PATH = "/api/ready"

if __name__ == "__main__":  # Streamlit runs this file as the page, once per visit and click
    main()
else:  # imported by `streamlit run app.py` (it finds `app` below) to serve the page: the server itself
    from starlette.routing import Route

    app = st.App(__file__, lifespan=server_lifespan, routes=[Route(READY_PATH, ready_endpoint, methods=["GET"])])
