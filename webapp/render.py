"""What the page shows, as strings: limits on a typed review, the verdict and its threshold, the sidebar's
facts, the explanation's HTML and captions, colours, charts' specifications and the example reviews.

Pure functions of their inputs, importing neither Streamlit nor PyTorch (altair, Streamlit's own chart library,
is imported where a chart is built); app.py draws what they return.
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

from training.paths import PROJECT_ROOT
from training.readers import cut_middle
from training.text import UNCERTAIN

if TYPE_CHECKING:  # imported where used: importing torch takes seconds, and the page must not wait for it
    import pandas as pd

    from training.text import Prediction

MAX_REVIEW_CHARS = 20_000  # far beyond what the model reads (its max_length tokens); keeps tokenizing instant
# What the review box accepts at all (its max_chars; Streamlit also cuts a longer value on the server, so a
# hostile client cannot send more). Above MAX_REVIEW_CHARS, so a pasted long review is cut with a notice.
MAX_TYPED_CHARS = 50_000
# Below this (temperature-calibrated) confidence a verdict is shown as "uncertain": below it the shipped
# adapter is barely better than a coin on its validation split (figures: docs/app.md).
DEFAULT_UNCERTAIN_BELOW = 0.75

# Explanation colours: word backgrounds at most this opaque, so the text stays readable on them.
POSITIVE_RGB = (22, 163, 74)
NEGATIVE_RGB = (220, 38, 38)
MAX_ALPHA = 0.8

# The verdict's colour and icon. Material icons ship with Streamlit's frontend, so they show even where no emoji
# font is installed; other labels are blue with a film icon.
LABEL_STYLE = {
    "POSITIVE": ("green", ":material/thumb_up:"),
    "NEGATIVE": ("red", ":material/thumb_down:"),
    UNCERTAIN: ("gray", ":material/help:"),
}
OTHER_LABEL_STYLE = ("blue", ":material/movie:")

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


def cap_review(text: str, max_chars: int = MAX_REVIEW_CHARS) -> tuple[str, bool]:
    """The review cut to at most `max_chars` characters, and whether it was cut.

    The middle goes, not the end: the model reads a long review's beginning and end (head+tail)."""
    if len(text) <= max_chars:
        return text, False
    return cut_middle(text, max_chars), True


def confidence_floor(n_labels: int) -> float:
    """The lowest top probability an N-label prediction can have: 1/N (50% for two labels)."""
    return 1.0 / max(n_labels, 2)


def threshold_range(n_labels: int) -> tuple[int, int, int]:
    """The 'uncertain below' slider for N labels, in whole percents: (min, max, default).

    The minimum is the confidence floor 1/N rounded up (below it every prediction would pass); the default
    lies as far between that floor and 100% as DEFAULT_UNCERTAIN_BELOW lies between 50% and 100%, so two
    labels keep 50, 99 and 75, and four get 25, 99 and 62."""
    floor = confidence_floor(n_labels)
    low = math.ceil(round(floor * 100, 6))
    share = (DEFAULT_UNCERTAIN_BELOW - 0.5) / 0.5
    default = min(max(math.floor(round((floor + (1 - floor) * share) * 100, 6)), low), 99)
    return low, 99, default


def threshold_help(temperature: float, n_labels: int) -> str:
    """The threshold slider's help: what falls below it, why the default, and whether confidences are calibrated."""
    calibration = f"temperature-scaled (T = {temperature:.2f})" if temperature != 1.0 else "not temperature-scaled"
    why = (
        f"Below the default {DEFAULT_UNCERTAIN_BELOW:.0%}, the shipped model was right only 58% of the "
        "time on its validation reviews."
        if n_labels == 2
        else f"With {n_labels} labels the top label's probability is at least {1 / n_labels:.0%}."
    )
    return (
        "A prediction less confident than this is shown as UNCERTAIN with the label it leans to. "
        f"{why} Confidences here are {calibration}."
    )


def page_intro(labels: tuple[str, ...] | None) -> str:
    """The line under the page's title: positive or negative for two labels (or while the model loads), else the
    adapter's labels."""
    if labels is None or len(labels) == 2:
        return (
            "Paste a movie review, or upload a file of them, and a LoRA-tuned transformer tells you whether each "
            "is positive or negative."
        )
    return (
        "Paste a movie review, or upload a file of them, and a LoRA-tuned transformer tells you which of its "
        f"{len(labels)} labels fits each: {', '.join(labels)}."
    )


def verdict(prediction: Prediction, threshold: float) -> tuple[str, bool]:
    """What to show for a prediction (Prediction.verdict: its label, or UNCERTAIN when its confidence is below
    `threshold`), and whether it is UNCERTAIN."""
    shown = prediction.verdict(threshold)
    return shown, shown == UNCERTAIN


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


def model_facts(info: dict, labels: tuple[str, ...]) -> str:
    """The sidebar's list of what is loaded (Predictor.info()): base model, adapter, length, precision and why, LoRA,
    labels."""
    return "\n".join(
        [
            f"- **Base model:** `{info['base_model']}`",
            f"- **Adapter:** `{display_path(info['adapter'])}`",
            f"- **Max length:** {info['max_length']} tokens",
            f"- **Truncation:** `{info['truncation']}`",
            f"- **Precision:** {info['precision']} ({info.get('precision_reason', 'as asked')})",
            f"- **LoRA:** {describe_lora(info['lora'])}",
            *([] if len(labels) == 2 else [f"- **Labels:** {', '.join(map(code_span, labels))}"]),
        ]
    )


def percent(value) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) else "–"


def queue_message(running: int, wait_s: float, what: str, position: int) -> str:
    """What a visitor waiting for the heavy-work queue reads: `what` is number `position` in line."""
    return (
        f"Busy: {running} job(s) running. {what} is number {position} in line and starts "
        f"automatically (up to {wait_s:.0f} s)."
    )


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


def explanation_heading(explanation, binary: bool) -> str:
    """The line above the coloured review: what the colours mean for two labels, or for the label explained."""
    if binary:
        return "**Why:** each word's colour shows which way it pushed the prediction, and how hard."
    return (
        f"**Why {explanation.label}:** each word's colour shows whether it pushed towards "
        f"{explanation.label} or away from it, towards the other labels, and how hard."
    )


def explanation_caption(explanation, binary: bool, elapsed_s: float, device: str) -> str:
    """The line under an explanation: the method, what the scores add up to, and how long it took where."""
    note = (
        " Only the beginning and end of this long review were read, and only they are coloured."
        if getattr(explanation, "truncated", False)
        else ""
    )
    target = "" if binary else f" of {explanation.target}"
    return (
        f"Integrated Gradients on the word embeddings, relative to an empty review; scores in logit units{target} "
        f"add up to {explanation.prediction_minus_baseline:+.2f} (integration error {explanation.convergence_delta:+.3f}). "
        f"Explained in {elapsed_s:.1f} s on {device}.{note}"
    )


# Verdict colours: two labels keep red and green; more take Tableau 10's colours in label order (no gray, which
# is UNCERTAIN's). UNCERTAIN is gray and empty rows light gray either way.
BINARY_VERDICT_COLOURS = ("#dc2626", "#16a34a")
LABEL_COLOURS = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
)  # fmt: skip
UNCERTAIN_COLOUR, EMPTY_COLOUR = "#9ca3af", "#e5e7eb"


def verdict_colours(labels: tuple[str, ...]) -> list[str] | None:
    """Colours for the verdicts chart's domain (each label, UNCERTAIN, empty row); None (the chart's own
    palette) for more labels than LABEL_COLOURS holds."""
    if len(labels) == 2:
        return [*BINARY_VERDICT_COLOURS, UNCERTAIN_COLOUR, EMPTY_COLOUR]
    if len(labels) > len(LABEL_COLOURS):
        return None
    return [*LABEL_COLOURS[: len(labels)], UNCERTAIN_COLOUR, EMPTY_COLOUR]


def verdicts_chart(shown: pd.DataFrame, labels: tuple[str, ...]):
    """An altair bar chart of each verdict's share of rows (verdict_counts' rows), in verdict_colours."""
    import altair as alt  # Streamlit's own chart library; imported here, only when there is something to plot

    colours = alt.Scale(domain=[*labels, UNCERTAIN, "empty row"], range=verdict_colours(labels) or alt.Undefined)
    return (
        alt.Chart(shown)
        .mark_bar()
        .encode(
            x=alt.X("verdict:N", sort=None, title=None, axis=alt.Axis(labelAngle=0)),
            y=alt.Y("share:Q", axis=alt.Axis(format="%"), title="share of rows"),
            color=alt.Color("verdict:N", scale=colours, legend=None),
            tooltip=["verdict", "reviews", alt.Tooltip("share:Q", format=".1%")],
        )
        .properties(height=240)
    )


def confidence_chart(bins: pd.DataFrame, threshold: float):
    """An altair histogram of confidence_histogram's bins, those below `threshold` in gray."""
    import altair as alt
    import numpy as np

    bins = bins.assign(side=np.where(bins["low"] + 1e-9 < threshold, "below the threshold", "at or above"))
    return (
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
        .properties(height=240)
    )
