"""Classify movie reviews with the trained LoRA adapter (positive or negative for the shipped one, any label
set an adapter was trained on): one typed review (with an on-demand explanation of which words drove the
verdict) or a whole uploaded file.

    streamlit run app.py

The model folder is trained_model/ unless SENTIMENT_MODEL_DIR names another. The app only calls `Predictor`
(inference/predictor.py), the path the CLI and evaluation use: the sidebar's figures are the ones users get.

Limits: a typed review is capped at MAX_REVIEW_CHARS, an upload at MAX_UPLOAD_MB and MAX_BATCH_ROWS; uploads are
read from their bytes, never from a path a user types.

This file is the page: main() and small *_ui() functions. The logic behind it lives in webapp/ (no Streamlit):
runtime.py (model loader, work queues, server hooks), uploads.py, results.py, render.py (strings, HTML, charts).

It is also the server: `streamlit run app.py` finds `app = st.App(...)` at the bottom and serves this file as
the page through it. Its start-up hook (`webapp.runtime.server_lifespan`) starts loading the model in a
background thread before the first visitor arrives; `GET /api/ready` answers 200 once the model can answer (503
while it loads or after a failed load); every HTTP request must name an allowed host (DNS rebinding). The page
imports nothing that pulls in PyTorch until the model is there, so it is drawn at once while the model loads.
"""

from __future__ import annotations

import functools
import time
import uuid
from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st

from training.errors import DataError
from training.readers import spreadsheet_safe
from webapp import runtime
from webapp.render import (
    EXAMPLE_REVIEWS,
    LABEL_STYLE,
    MAX_REVIEW_CHARS,
    MAX_TYPED_CHARS,
    OTHER_LABEL_STYLE,
    cap_review,
    code_span,
    confidence_chart,
    explanation_caption,
    explanation_heading,
    highlight_html,
    legend_html,
    model_facts,
    page_intro,
    percent,
    queue_message,
    threshold_help,
    threshold_range,
    verdict,
    verdicts_chart,
)
from webapp.results import confidence_histogram, results_frame, score_texts, verdict_summary
from webapp.runtime import READY_PATH, Busy, log_unexpected, model_dir_from_env, model_loader
from webapp.uploads import CLI_HINT, UPLOAD_PROMPT, UPLOAD_TYPES, download_name, parse_upload, read_upload

if TYPE_CHECKING:  # the modules behind these import torch: imported where used, once the model is there
    from inference.predictor import Predictor
    from training.text import Prediction

REVIEW_KEY = "review"
BATCH_KEY = "batch_result"
UPLOAD_KEY = "upload_frame"
EXPLANATION_KEY = "explanation"
POLL_KEY = "polling_the_model"  # set before a rerun that only checks whether the model has loaded
SESSION_KEY = "session_id"  # this session's name in the work queues when its connection has no address
LOAD_POLL_S = 0.5
METRICS_PER_ROW = 6  # verdict counts side by side; more labels wrap onto further rows
LOADING_MESSAGE = "Loading the model (once per server)… Type a review or upload a file meanwhile: it is scored as soon as the model is ready."


def in_line(queue: runtime.WorkQueue, what: str, notice):
    """A slot in `queue` for this visitor's job, `notice` telling them their place in line while they wait. It takes
    a share of their client's: the connection's address, or the session when Streamlit gives none (this machine)."""
    client = runtime.client_key(st.context.ip_address, st.session_state.setdefault(SESSION_KEY, uuid.uuid4().hex))
    return queue.slot(
        what.lower(),
        on_wait=lambda position: notice.info(
            queue_message(queue.running, queue.wait_s, what, position), icon=":material/hourglass_top:"
        ),
        client=client,
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
    sidebar.markdown(model_facts(info, labels))
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
    low, high, default = threshold_range(n_labels)
    percent_value = st.sidebar.slider(
        "Uncertain below this confidence (%)",
        min_value=low,
        max_value=high,
        value=default,
        key="uncertain_below",
        help=threshold_help(temperature, n_labels),
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
    color, icon = LABEL_STYLE.get(shown, OTHER_LABEL_STYLE)
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
            with in_line(runtime.HEAVY_WORK, "Your explanation", notice):
                notice.empty()
                with st.spinner(
                    f"Weighing each word (Integrated Gradients: {DEFAULT_STEPS} passes through the model, up to a minute on a CPU)…"
                ):
                    started = time.perf_counter()
                    explanation = predictor.explain(
                        text, n_steps=DEFAULT_STEPS, tokens_per_pass=runtime.EXPLAIN_TOKENS_PER_PASS
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
    box.markdown(explanation_heading(explanation, binary))
    box.html(legend_html(negative_label, positive_label) + highlight_html(explanation.text, explanation.words))
    towards_negative, towards_positive = box.columns(2)
    for column, direction, label in (
        (towards_positive, "positive", positive_label),
        (towards_negative, "negative", negative_label),
    ):
        top = explanation.top(5, direction)
        column.markdown(f"**Towards {label}**")
        column.markdown("\n".join(f"- {code_span(word.word)} {word.score:+.2f}" for word in top) or "(no word)")
    box.caption(explanation_caption(explanation, binary, elapsed_s, predictor.device_name))


def single_review_ui(predictor: Predictor | None, threshold: float) -> None:
    examples_ui()
    text, was_truncated = cap_review(review_ui())
    if was_truncated:
        st.warning(
            f"Your review is longer than {MAX_REVIEW_CHARS:,} characters; its first and last {MAX_REVIEW_CHARS // 2:,} were used."
        )
    if predictor is None:  # still loading: the box is usable, the prediction comes once the model is ready
        return
    from training.text import EmptyTextError

    notice = st.empty()
    try:
        with in_line(runtime.LIGHT_WORK, "Your review", notice):  # the light lane: webapp/runtime.py says why
            notice.empty()
            started = time.perf_counter()
            prediction = predictor.predict_one(text)
            elapsed_ms = (time.perf_counter() - started) * 1000
    except EmptyTextError:
        st.info("Type or paste a review above (or pick an example) to see its sentiment.")
        return
    except Busy as error:
        notice.warning(str(error), icon=":material/hourglass_disabled:")
        return
    result_ui(prediction, threshold, elapsed_ms, predictor.device_name)
    explain_ui(predictor, text)


def upload_ui() -> tuple[str, bytes, str] | None:
    """The uploaded file as (name, bytes, id), or None."""
    upload = st.file_uploader(UPLOAD_PROMPT, type=list(UPLOAD_TYPES), key="upload")
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
    shown, scored = verdict_summary(results, labels)
    st.caption(
        f"Scored {scored:,} reviews in {stored['elapsed_s']:.1f} s on {stored['device']} "
        f"({scored / max(stored['elapsed_s'], 1e-9):.1f} reviews/s)."
    )
    rows = list(shown.itertuples())
    for start in range(0, len(rows), METRICS_PER_ROW):  # many labels: several rows of metrics
        for column, row in zip(
            st.columns(METRICS_PER_ROW if len(rows) > METRICS_PER_ROW else len(rows)),
            rows[start : start + METRICS_PER_ROW],
        ):
            column.metric(f"{row.verdict} ({row.reviews:,})", f"{row.share:.0%}")

    shares, histogram = st.columns(2)
    shares.markdown("**Verdicts**")
    shares.altair_chart(verdicts_chart(shown, labels), width="stretch")
    histogram.markdown("**Confidence**")
    bins = confidence_histogram(results["confidence"], n_labels=len(labels))
    histogram.altair_chart(confidence_chart(bins, threshold), width="stretch")
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


def batch_ui(predictor: Predictor | None, threshold: float) -> None:
    """Upload a file, pick its text column, score it with a progress bar, see and download the results."""
    upload = upload_ui()
    if upload is None:
        for key in (UPLOAD_KEY, BATCH_KEY):  # a removed file's rows do not stay in the session
            st.session_state.pop(key, None)
        st.caption(f"Results come back as a table, charts and a CSV. For bigger files: `{CLI_HINT}`")
        return
    name, data, upload_id = upload
    notice = st.empty()
    reading = functools.partial(in_line, runtime.HEAVY_WORK, "Reading your file", notice)  # entered if read
    try:  # read once per uploaded file (its content's hash) and session, not on every rerun; in line with heavy work
        cached = st.session_state[UPLOAD_KEY] = parse_upload(
            name, data, upload_id, st.session_state.get(UPLOAD_KEY), reading
        )
        _, _, frame, candidates, guess = cached
    except DataError as error:
        notice.error(str(error))
        return
    except Busy as error:
        notice.warning(str(error), icon=":material/hourglass_disabled:")
        return
    notice.empty()
    column = column_ui(frame, name, candidates, guess)
    if column is None:
        return
    key = (upload_id, column)
    if predictor is None:
        st.button(f"Score {len(frame):,} reviews", icon=":material/play_arrow:", key="score", disabled=True)
        st.caption("Scoring starts once the model has loaded.")
        return
    if st.button(f"Score {len(frame):,} reviews", type="primary", icon=":material/play_arrow:", key="score"):
        notice = st.empty()
        try:
            with in_line(runtime.HEAVY_WORK, "Your file", notice):
                notice.empty()
                frame = read_upload(name, data, text_column=column)  # the chosen column read as text, as the CLI does
                texts = frame[column].tolist()
                if not any(text.strip() for text in texts):
                    st.error(f"Every row of '{column}' is empty; choose the column holding the reviews.")
                    return
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
    if loader.state == "failed":  # what failed, and where, is for the server's log: paths and messages stay there
        st.error(loader.failure_notice())
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


if __name__ == "__main__":  # Streamlit runs this file as the page, once per visit and click
    main()
else:  # imported by `streamlit run app.py` (it finds `app` below) to serve the page: the server itself
    from starlette.middleware import Middleware
    from starlette.routing import Route

    routes = [Route(READY_PATH, runtime.ready_endpoint, methods=["GET"])]  # the readiness check
    hosts = [Middleware(runtime.AllowedHostsOnly)]  # DNS rebinding: every HTTP route checks the Host
    app = st.App(__file__, lifespan=runtime.server_lifespan, routes=routes, middleware=hosts)
