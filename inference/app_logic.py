"""The app's logic without its page: limits, verdicts, the explanation's HTML, reading uploads and
summarising their results. Pure functions of their inputs (read_upload alone writes a private temporary
file); app.py draws them with Streamlit, and this module imports without Streamlit, so tests and
scripts use it directly.

It also imports without PyTorch (inference.predict is imported where it is used): the page imports this
module on every visit, and while the model loads in the background (started with the server, see
model_loader) the page must not wait for torch's import to be drawn.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import html
import math
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from training.data import DataError, ReadLimits, cut_middle, read_table
from training.paths import DEFAULT_MODEL_DIR, PROJECT_ROOT

if TYPE_CHECKING:  # imported where used: importing torch takes seconds, and the page must not wait for it
    from inference.predict import Prediction, Predictor

MODEL_DIR_ENV = "SENTIMENT_MODEL_DIR"
MAX_REVIEW_CHARS = 20_000  # far beyond what the model reads (its max_length tokens); keeps tokenizing instant
# What the review box accepts at all (its max_chars; Streamlit also cuts a longer value on the server, so a
# hostile client cannot send more). Above MAX_REVIEW_CHARS, so a pasted long review is cut with a notice.
MAX_TYPED_CHARS = 50_000
# Below this (temperature-calibrated) confidence a verdict is shown as "uncertain": below it the shipped
# adapter is barely better than a coin on its validation split (figures: docs/app.md).
DEFAULT_UNCERTAIN_BELOW = 0.75
UNCERTAIN = "UNCERTAIN"

# Uploads. Keep MAX_UPLOAD_MB equal to server.maxUploadSize in .streamlit/config.toml (a test checks):
# the server refuses bigger files before the app sees them, the app checks again and says why.
MAX_UPLOAD_MB = 10
MAX_BATCH_ROWS = 5_000  # minutes on a CPU, seconds on a GPU (docs/speed.md); more: the command line
UPLOAD_TYPES = ("csv", "txt", "jsonl", "parquet")
MAX_COLUMNS = 200  # a file of reviews has a handful; 80,000 columns made every rerun take seconds
# What an upload may decode to: Parquet compresses, and one dictionary-encoded value can repeat on every row
# (a 298-byte file decoded to 100 MiB). Checked from the file's metadata before anything is decoded.
MAX_DECODED_MB = 4 * MAX_UPLOAD_MB
# Keep server.maxMessageSize in .streamlit/config.toml at this (a test checks): the largest websocket message
# the server accepts (a typed review, widget values) or sends (an upload's results table).
MAX_MESSAGE_MB = 3 * MAX_UPLOAD_MB
SCORE_CHUNK = 64  # reviews per progress-bar step
# Explanations in the app take their gradients 4,096 tokens a pass (the library's default is 8,192): every
# session shares this one process, so half the working memory is worth a slightly slower explanation.
EXPLAIN_TOKENS_PER_PASS = 4096
BATCH_SIZE = 32
CLI_HINT = "python inference/predict.py --file reviews.csv --output predictions.csv"
UPLOAD_LIMITS = ReadLimits(
    max_rows=MAX_BATCH_ROWS,
    max_columns=MAX_COLUMNS,
    max_bytes=MAX_DECODED_MB * 2**20,
    max_cell_chars=MAX_REVIEW_CHARS,
    hint=f"Split the file, or score it from the command line: `{CLI_HINT}`",
)

# Heavy work (an explanation, scoring a file) holds a CPU for up to minutes and 1-2 GB: at most this many run
# at once, across all sessions; others wait in line up to HEAVY_WAIT_S, then are asked to retry.
HEAVY_SLOTS_ENV = "SENTIMENT_HEAVY_SLOTS"
HEAVY_WAIT_ENV = "SENTIMENT_HEAVY_WAIT_S"

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


# ----------------------------------------------------------------------------- pure helpers


def cap_review(text: str, max_chars: int = MAX_REVIEW_CHARS) -> tuple[str, bool]:
    """The review cut to at most `max_chars` characters, and whether it was cut.

    The middle goes, not the end: the model reads a long review's beginning and end (head+tail)."""
    if len(text) <= max_chars:
        return text, False
    return cut_middle(text, max_chars), True


def is_uncertain(confidence: float, threshold: float) -> bool:
    return confidence < threshold


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
        path.write_bytes(data)  # a private temporary copy, not a user's file
        try:
            frame = read_table(path, text_column=text_column, limits=UPLOAD_LIMITS)
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
        column
        for column in frame.columns
        if frame[column].map(lambda value: isinstance(value, str) and value.strip() != "").any()
    ]


def upload_digest(data: bytes) -> str:
    """A name for an upload's content: the same file uploaded again is recognised, whatever its name."""
    return hashlib.sha256(data).hexdigest()


def guess_text_column(frame: pd.DataFrame, candidates: list):
    """ "text" if there is such a column, else the one with the longest texts on average."""
    if "text" in candidates:
        return "text"
    return max(
        candidates,
        key=lambda column: frame[column].map(lambda value: len(value) if isinstance(value, str) else 0).mean(),
    )


def score_texts(
    predictor: Predictor,
    texts: list[str],
    on_progress: Callable[[int, int], None] | None = None,
    chunk_size: int = SCORE_CHUNK,
) -> list[dict]:
    """predict_table's rows for `texts`, in order, scored `chunk_size` at a time to report progress.

    The texts go longest first across chunks, as Predictor does within a call, so each batch still pads
    to similar lengths and chunking costs no speed (docs/speed.md).
    """
    from inference.predict import predict_table

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
            ""
            if row["error"]
            else (UNCERTAIN if is_uncertain(row["confidence"], threshold) else row["predicted_label"])
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


def confidence_histogram(confidences, bin_width: float = 0.05, n_labels: int = 2) -> pd.DataFrame:
    """Counts of confidences in bins of `bin_width` from the N-label floor (1/N, down to a bin edge: 50% for
    two labels, 25% for four) to 100%: a top probability never goes below 1/N."""
    low = round(math.floor(round(confidence_floor(n_labels) / bin_width, 6)) * bin_width, 6)
    edges = np.round(np.arange(low, 1.0 + bin_width / 2, bin_width), 6)
    values = np.clip(
        np.asarray([value for value in confidences if value is not None and value == value], float), low, 1.0
    )
    counts, _ = np.histogram(values, bins=edges)
    return pd.DataFrame(
        {
            "confidence": [f"{low:.0%}–{high:.0%}" for low, high in zip(edges[:-1], edges[1:])],
            "low": edges[:-1],
            "high": edges[1:],
            "reviews": counts,
        }
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


def download_name(upload_name: str) -> str:
    """A safe file name for the results: the upload's stem (letters, digits, - and _ only) + _predictions.csv."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(upload_name).stem).strip("_") or "reviews"
    return f"{stem[:60]}_predictions.csv"


# ----------------------------------------------------------------------------- shared by every session


class Busy(RuntimeError):
    """No slot for heavy work came free in time; the message says so and asks to retry."""

    def __init__(self, position: int, waited_s: float, what: str):
        super().__init__(
            f"The server is busy: {what} waited {waited_s:.0f} s in line (position {position}) without a free slot. "
            "Try again in a minute."
        )
        self.position = position


class WorkQueue:
    """At most `slots` heavy jobs at once across every session; the others wait in arrival order.

    A waiter hears its position (1 = next) through `on_wait` about every `poll_s`, and gives up with Busy after
    `wait_s`: never an endless hang. One instance per server process (HEAVY_WORK), shared by all sessions.
    """

    def __init__(self, slots: int = 1, wait_s: float = 30.0, poll_s: float = 0.5):
        if slots < 1:
            raise ValueError(f"a work queue needs at least one slot, not {slots}")
        self.slots, self.wait_s, self.poll_s = slots, wait_s, poll_s
        self._condition = threading.Condition()
        self._running = 0
        self._line: list[object] = []

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._line)

    @contextlib.contextmanager
    def slot(self, what: str = "this job", on_wait: Callable[[int], None] | None = None) -> Iterator[None]:
        ticket = object()
        started = time.monotonic()
        with self._condition:
            self._line.append(ticket)
        try:
            while True:
                with self._condition:
                    if self._running < self.slots and self._line[0] is ticket:
                        self._line.pop(0)
                        self._running += 1
                        self._condition.notify_all()
                        break
                    position = self._line.index(ticket) + 1
                    waited = time.monotonic() - started
                    if waited >= self.wait_s:
                        raise Busy(position, waited, what)
                    self._condition.wait(min(self.poll_s, self.wait_s - waited))
                if on_wait is not None:  # outside the lock: it may draw on the page
                    on_wait(position)
        except BaseException:
            with self._condition:
                if ticket in self._line:
                    self._line.remove(ticket)
                self._condition.notify_all()
            raise
        release_freed_memory()  # what other sessions freed, before this job takes its gigabyte: a lower peak
        try:
            yield
        finally:
            with self._condition:
                self._running -= 1
                self._condition.notify_all()
            release_freed_memory()


def release_freed_memory() -> bool:
    """Hand memory that heavy work freed back to the operating system (glibc's malloc_trim; Linux only).

    Each session's page runs on its own thread, and glibc keeps what a thread freed in that thread's arena: in the
    load test every explanation left 350-500 MB resident for good (608 MB, then 1,107, 1,459, 1,854 after three).
    Trimming before and after each heavy job, and every TRIM_EVERY_S seconds (typing and uploads run on many threads
    too), takes milliseconds. Returns whether a trim ran."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0) or True)
    except (OSError, AttributeError):  # not glibc (musl, say): nothing to trim
        return False


M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas for the threads started from now on (Linux only); returns whether it took.

    Streamlit runs each session's page on a thread of its own, and glibc gives busy threads arenas of their own,
    whose freed memory stays resident after the sessions end; two arenas keep that slack small at no cost
    measurable in the load test (docs/reliability.md). The server calls this once, as it starts."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # not glibc: its own allocator decides
        return False


def heavy_work_queue() -> WorkQueue:
    """The queue from the environment: $SENTIMENT_HEAVY_SLOTS jobs at once (default 1: one CPU-bound job
    already uses every core), waiting up to $SENTIMENT_HEAVY_WAIT_S seconds (default 30)."""
    slots = int(os.environ.get(HEAVY_SLOTS_ENV) or 1)
    wait_s = float(os.environ.get(HEAVY_WAIT_ENV) or 30)
    return WorkQueue(max(slots, 1), max(wait_s, 0.0))


HEAVY_WORK = heavy_work_queue()


WARM_UP_REVIEW = "A warm-up review: the first prediction sets up the thread pools and buffers every later one uses."


def load_and_warm_up(model_dir: str) -> Predictor:
    """Predictor.from_pretrained, then one prediction: the first pass through a freshly loaded model is several
    times slower than the next, and "ready" should mean a visitor's first review is answered at full speed."""
    from inference.predict import Predictor

    predictor = Predictor.from_pretrained(model_dir)
    predictor.predict_one(WARM_UP_REVIEW)
    return predictor


class ModelLoader:
    """Loads a Predictor in a background thread, so the page can be drawn and used while the model loads.

    `state` is "loading", "ready" or "failed"; `retry()` starts a new attempt after a failure (a fix on disk).
    """

    def __init__(self, model_dir: str, load: Callable[[str], Predictor] | None = None):
        self.model_dir = model_dir
        self._load = load or load_and_warm_up
        self._lock = threading.Lock()
        self.predictor: Predictor | None = None
        self.error: BaseException | None = None
        self.started = self.finished = 0.0
        self._thread: threading.Thread | None = None
        self.start()

    def start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self.error, self.started, self.finished = None, time.monotonic(), 0.0
            self._thread = threading.Thread(target=self._run, name="model-loader", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            predictor = self._load(self.model_dir)
        except BaseException as error:  # kept and shown by the page; an unexpected one is logged there
            self.error = error
        else:
            self.predictor = predictor
        self.finished = time.monotonic()

    @property
    def state(self) -> str:
        if self.predictor is not None:
            return "ready"
        if self.error is not None and self._thread is not None and not self._thread.is_alive():
            return "failed"
        return "loading"

    def wait(self, timeout_s: float) -> str:
        """The state after at most `timeout_s` seconds of waiting for the load to finish."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        return self.state

    def retry(self) -> None:
        if self.state == "failed":
            self.start()

    def readiness(self) -> dict:
        """What the readiness endpoint answers: the state, seconds since the load started (or how long it took),
        and for a failure the error's type (no message: it can name server paths)."""
        seconds = (self.finished or time.monotonic()) - self.started
        shown = display_path(self.model_dir)  # relative to the project; only the folder's name when outside it
        shown = shown if not Path(shown).is_absolute() else Path(shown).name
        answer = {"state": self.state, "model_dir": shown, "seconds": round(seconds, 2)}
        if answer["state"] == "failed":
            answer["error"] = type(self.error).__name__
        return answer


_LOADERS: dict[str, ModelLoader] = {}
_LOADERS_LOCK = threading.Lock()
TRIM_EVERY_S = 10.0
_TRIMMER: threading.Thread | None = None


def _trim_periodically() -> None:
    while True:
        time.sleep(TRIM_EVERY_S)
        release_freed_memory()


def start_trimmer() -> None:
    """One daemon thread per server that hands freed memory back every TRIM_EVERY_S seconds (Linux)."""
    global _TRIMMER
    if _TRIMMER is None and sys.platform.startswith("linux"):
        _TRIMMER = threading.Thread(target=_trim_periodically, name="malloc-trim", daemon=True)
        _TRIMMER.start()


def model_loader(model_dir: str | None = None) -> ModelLoader:
    """The one ModelLoader per adapter folder in this process, shared by every session (and by the server's
    start-up hook, which calls this as `streamlit run` starts, so the model loads before the first visitor).

    Created, and its background load started, on the first call; a failed load is retried by the caller
    (the page retries on every visit or click)."""
    model_dir = model_dir or model_dir_from_env()
    with _LOADERS_LOCK:
        loader = _LOADERS.get(model_dir)
        if loader is None:
            loader = _LOADERS[model_dir] = ModelLoader(model_dir)
            start_trimmer()
        return loader
