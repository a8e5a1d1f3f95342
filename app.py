"""Classify a movie review as positive or negative with the trained LoRA adapter.

    streamlit run app.py

The model folder is trained_model/ unless SENTIMENT_MODEL_DIR names another adapter folder. The app
only calls `Predictor` (inference/predict.py), the same path the CLI and evaluation use, so the
figures in the sidebar are the ones a user gets here.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import streamlit as st

from inference.predict import DEFAULT_MODEL_DIR, PROJECT_ROOT, EmptyTextError, Prediction, Predictor
from training.model import ModelLoadError

MODEL_DIR_ENV = "SENTIMENT_MODEL_DIR"
MAX_REVIEW_CHARS = 20_000  # far beyond what the model reads (its max_length tokens); keeps tokenizing instant
REVIEW_KEY = "review"
# Material icons ship with Streamlit's frontend, so they show even where no emoji font is installed.
LABEL_STYLE = {"POSITIVE": ("green", ":material/thumb_up:"), "NEGATIVE": ("red", ":material/thumb_down:")}

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


def cap_review(text: str, max_chars: int = MAX_REVIEW_CHARS) -> tuple[str, bool]:
    """The review cut to at most `max_chars` characters, and whether it was cut.

    The middle goes, not the end: the model reads a long review's beginning and end (head+tail)."""
    if len(text) <= max_chars:
        return text, False
    head = max_chars // 2
    return text[:head] + text[len(text) - (max_chars - head) :], True


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


def examples_ui() -> None:
    """Buttons that fill the text box with an example review."""
    st.caption("Try an example:")
    for column, (name, text) in zip(st.columns(len(EXAMPLE_REVIEWS)), EXAMPLE_REVIEWS.items()):
        column.button(name, on_click=fill_review, args=(text,), width="stretch", key=f"example_{name}")


def fill_review(text: str) -> None:
    # Runs before the rerun, so the text area below is created with the new value.
    st.session_state[REVIEW_KEY] = text


def review_ui() -> str:
    """The review as typed (uncapped; cap_review caps it)."""
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


def result_ui(prediction: Prediction, elapsed_ms: float, device: str) -> None:
    color, icon = LABEL_STYLE.get(prediction.label, ("blue", ":material/movie:"))
    result = st.container(border=True)
    label, confidence = result.columns([3, 2], vertical_alignment="center")
    label.markdown(f"## :{color}[{icon} {prediction.label}]")
    confidence.metric("Confidence", f"{prediction.confidence:.1%}")
    for name, probability in sorted(prediction.probabilities.items(), key=lambda item: -item[1]):
        result.progress(probability, text=f"{name}: {probability:.1%}")
    result.caption(f"Predicted in {elapsed_ms:.0f} ms on {device}")


def main() -> None:
    st.set_page_config(page_title="Movie review sentiment", page_icon=":material/movie:")
    st.title(":material/movie: Movie review sentiment")
    st.write("Paste a movie review and a LoRA-tuned transformer tells you whether it is positive or negative.")

    try:
        predictor = load_predictor(model_dir_from_env())
    except ModelLoadError as error:
        st.error(f"The model could not be loaded. {error}")
        st.stop()
    sidebar_ui(predictor.info())

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
    result_ui(prediction, elapsed_ms, predictor.device_name)


if __name__ == "__main__":
    main()
