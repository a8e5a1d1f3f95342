"""Safe to expose (issue 15): input limits checked before decoding, errors as one line plus a log file,
spreadsheet-safe CSV output, the bounded queue for heavy work, and the server's settings."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import threading
import time
import tomllib

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import SHIPPED_MODEL_DIR
from training.errors import DataError
from training.paths import PROJECT_ROOT
from training.readers import NO_LIMITS, ReadLimits, read_table, spreadsheet_safe
from webapp import runtime
from webapp.render import MAX_REVIEW_CHARS, MAX_TYPED_CHARS
from webapp.results import results_frame
from webapp.runtime import MODEL_DIR_ENV, Busy, ClientBusy, ModelLoader, WorkQueue
from webapp.uploads import MAX_MESSAGE_MB, read_upload

MIB = 2**20


def parquet_bomb(path, rows: int = 100, value_bytes: int = MIB) -> int:
    """The issue's bomb: one long string, dictionary-encoded, repeated on every row, zstd. Returns its size."""
    table = pa.table({"text": pa.array(["a" * value_bytes] * rows).dictionary_encode()})
    # No stored Arrow schema: a reader sees a plain text column (dictionary-encoded on disk) and expands it.
    pq.write_table(table, path, compression="zstd", use_dictionary=True, write_statistics=False, store_schema=False)
    return path.stat().st_size


PEAK_ARROW_MEMORY = """
import sys
import pyarrow as pa
from webapp.uploads import read_upload
from training.errors import DataError
data = open(sys.argv[1], "rb").read()
try:
    read_upload("bomb.parquet", data)
    outcome = "read"
except DataError as error:
    outcome = str(error)
print(outcome)
print(pa.default_memory_pool().max_memory() / 2**20)  # the most Arrow ever held at once in this process, MB
"""


def test_a_parquet_bomb_upload_is_refused_from_its_metadata_without_decoding(tmp_path):
    bomb = tmp_path / "bomb.parquet"
    assert parquet_bomb(bomb) < 1024  # a few hundred bytes that decode to 100 MiB
    done = subprocess.run(
        [sys.executable, "-c", PEAK_ARROW_MEMORY, str(bomb)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    outcome, peak_mb = done.stdout.strip().splitlines()[-2:]
    assert "bomb.parquet decodes to 100.0 MB" in outcome and "command line" in outcome, outcome
    assert float(peak_mb) < 10, f"Arrow held {peak_mb} MB at its peak (over 100 MB when the whole file was decoded)"


def test_the_cli_refuses_a_parquet_bomb_unless_trusted(tmp_path, capsys):
    bomb = tmp_path / "bomb.parquet"
    parquet_bomb(bomb, rows=600, value_bytes=1_100_000)  # 660 MB decoded, over the CLI's 512 MB default
    predict = importlib.import_module("inference.predict")
    assert predict.cli(["--file", str(bomb), "--model", str(tmp_path / "no_model")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "decodes to 629.4 MB" in error and "--trust-large-files" in error

    small = tmp_path / "many_rows.parquet"
    pd.DataFrame({"text": ["fine"] * (ReadLimits().max_rows + 1)}).to_parquet(small)
    assert predict.cli(["--file", str(small), "--model", str(tmp_path / "no_model")]) == 2
    assert "100,001 rows" in capsys.readouterr().err
    # Trusted: the file is read, and the next problem is the missing model.
    assert predict.cli(["--file", str(small), "--trust-large-files", "--model", str(tmp_path / "no_model")]) == 2
    assert "No adapter folder" in capsys.readouterr().err


def test_limits_on_rows_columns_bytes_and_cells(tmp_path):
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(f"c{i}" for i in range(80_000)) + "\n" + ",".join("x" * 80_000) + "\n")
    with pytest.raises(DataError, match="has 80,000 columns; this reader takes at most 200"):
        read_upload("wide.csv", wide.read_bytes())

    long_review = "start " + "x" * 50_000 + " end"
    for name, data in {
        "long.csv": pd.DataFrame({"text": [long_review]}).to_csv(index=False).encode(),
        "long.jsonl": pd.DataFrame({"text": [long_review]}).to_json(orient="records", lines=True).encode(),
        "long.txt": long_review.encode(),
    }.items():
        text = read_upload(name, data, text_column="text")["text"][0]
        assert len(text) == MAX_REVIEW_CHARS and text.startswith("start ") and text.endswith(" end"), name

    big = tmp_path / "big.csv"
    big.write_text("text\n" + "a review\n" * 2000)
    with pytest.raises(DataError, match=r"is 0\.0 MB; this reader takes files of up to 0\.0 MB\. Trust me"):
        read_table(big, limits=ReadLimits(max_bytes=1000, hint="Trust me."))
    assert len(read_table(big, limits=NO_LIMITS)) == 2000
    with pytest.raises(DataError, match="more than 100 rows"):
        read_table(big, limits=ReadLimits(max_rows=100))


@pytest.mark.parametrize(
    "pandas_metadata",
    ['{"columns": 5}', '{"columns": [{"name": "text"}], "index_columns": []}', '{"index_columns": ["__x"]}'],
)
def test_crafted_pandas_metadata_is_one_message(tmp_path, pandas_metadata):
    path = tmp_path / "crafted.parquet"
    pq.write_table(pa.table({"text": ["a", "b"]}).replace_schema_metadata({b"pandas": pandas_metadata.encode()}), path)
    with pytest.raises(DataError, match="could not be read as parquet"):
        read_upload("crafted.parquet", path.read_bytes())


@pytest.mark.parametrize(
    "error",
    [MemoryError("out"), NotImplementedError("codec"), pa.ArrowCapacityError("too big"), KeyError("x"), TypeError()],
    ids=lambda error: type(error).__name__,
)
def test_every_reader_error_becomes_one_data_error(tmp_path, monkeypatch, error):
    path = tmp_path / "reviews.parquet"
    pd.DataFrame({"text": ["good"]}).to_parquet(path)

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(pq, "ParquetFile", fail)
    with pytest.raises(DataError, match=f"could not be read as parquet: {type(error).__name__}"):
        read_table(path)


# ----------------------------------------------------------------------------- errors: one line and a log


def test_an_oserror_writing_output_is_one_line(tmp_path, capsys):
    predict = importlib.import_module("inference.predict")
    reviews = tmp_path / "reviews.csv"
    reviews.write_text("text\nA fine film.\n")
    code = predict.cli(["--file", str(reviews), "--output", str(tmp_path / "no" / "such" / "out.csv")])
    error = capsys.readouterr().err
    assert code == 2 and "Traceback" not in error
    assert error.strip().splitlines()[-1].startswith("error: Could not write --output")


@pytest.mark.parametrize(
    "module",
    ["inference.predict", "training.train", "evaluation.evaluate", "evaluation.calibrate", "evaluation.long_reviews"],
)
def test_an_unexpected_error_is_one_line_and_a_log_file(module, tmp_path, monkeypatch, capsys):
    command = importlib.import_module(module)
    monkeypatch.setenv("SENTIMENT_LOG_DIR", str(tmp_path / "logs"))

    def crash(*args, **kwargs):
        raise RuntimeError("something nobody expected\nsecond line")

    monkeypatch.setattr(command, "main", crash)
    monkeypatch.setattr(command, "parse_args", lambda argv=None: None)
    with pytest.raises(RuntimeError):  # cli() lets it through, for callers and tests ...
        command.cli([])
    assert command.run([]) == 1  # ... the entry point (console script, `python script.py`) catches it
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and error.startswith("error: unexpected RuntimeError: something nobody expected")
    (log,) = (tmp_path / "logs").iterdir()
    assert str(log) in error and "Traceback" in log.read_text() and "second line" in log.read_text()


def run_app(monkeypatch, model_dir=SHIPPED_MODEL_DIR, review=None) -> AppTest:
    monkeypatch.setenv(MODEL_DIR_ENV, str(model_dir))
    app = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=60).run()
    if review is not None:
        app.text_area(key="review").input(review).run()
    assert not app.exception, [exception.value for exception in app.exception]
    return app


def test_a_half_written_metrics_file_leaves_the_app_serving(tmp_path, monkeypatch):
    from training.model import read_metrics

    adapter = tmp_path / "adapter"
    shutil.copytree(SHIPPED_MODEL_DIR, adapter)
    whole = (adapter / "metrics.json").read_text()
    (adapter / "metrics.json").write_text(whole[: len(whole) // 2])  # what a kill mid-write used to leave
    assert read_metrics(adapter) == {}
    app = run_app(monkeypatch, adapter, review="A wonderful film.")
    assert any("metrics are unavailable" in caption.value for caption in app.sidebar.caption)
    assert not app.error


def test_an_explanation_failure_is_a_message(monkeypatch, tmp_path):
    from inference.predictor import Predictor

    monkeypatch.setenv("SENTIMENT_LOG_DIR", str(tmp_path / "logs"))

    def broken(self, text, n_steps=None, tokens_per_pass=None):
        raise RuntimeError("the gradients went away")

    monkeypatch.setattr(Predictor, "explain", broken)
    app = run_app(monkeypatch, review="A wonderful film.")
    app.button(key="explain").click().run()
    assert not app.exception
    assert len(app.error) == 1 and "explanation failed (RuntimeError)" in app.error[0].value
    assert "the gradients went away" not in app.error[0].value  # details stay in the server's log
    assert "gradients went away" in next((tmp_path / "logs").iterdir()).read_text()


# ----------------------------------------------------------------------------- CSV formula injection


def test_csv_cells_that_would_run_as_formulas_are_quoted(tmp_path):
    hostile = ['=HYPERLINK("http://x")', "+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "fine", ""]
    frame = pd.DataFrame({"text": hostile, "score": [-1.5] * len(hostile)})
    safe = spreadsheet_safe(frame)
    assert safe["text"].tolist() == ["'" + text for text in hostile[:6]] + ["fine", ""]
    assert safe["score"].tolist() == [-1.5] * len(hostile)  # numbers stay numbers
    rows = [{"predicted_label": "POSITIVE", "confidence": 0.9, "error": ""}] * len(hostile)
    download = spreadsheet_safe(results_frame(frame, rows, 0.5)).to_csv(index=False)
    assert "\n=HYPERLINK" not in download and "'=HYPERLINK" in download
    # An upload's header is as untrusted as its cells: a column name is quoted the same way.
    headers = spreadsheet_safe(pd.DataFrame({"=cmd|' /C calc'!A0": ["x"], "@SUM(A1)": [1], "text": ["y"]}))
    assert list(headers.columns) == ["'=cmd|' /C calc'!A0", "'@SUM(A1)", "text"]
    assert headers.to_csv(index=False).startswith("'=cmd|' /C calc'!A0,'@SUM(A1),text\n")


def test_predict_output_csv_is_spreadsheet_safe_and_jsonl_unchanged(tmp_path):
    predict = importlib.import_module("inference.predict")
    reviews = tmp_path / "reviews.csv"
    pd.DataFrame({"text": ["=1+1 a great film", "@boring"], "+id": [1, 2]}).to_csv(reviews, index=False)
    for suffix in (".csv", ".jsonl"):
        assert predict.cli(["--file", str(reviews), "--output", str(tmp_path / f"out{suffix}")]) == 0
    written = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert written["text"].tolist() == ["'=1+1 a great film", "'@boring"] and "'+id" in written.columns
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [line["text"] for line in lines] == ["=1+1 a great film", "@boring"] and "+id" in lines[0]


# ----------------------------------------------------------------------------- the queue and the server


def test_the_queue_runs_k_at_once_tells_positions_and_never_hangs():
    queue = WorkQueue(slots=1, wait_s=0.6, poll_s=0.05)
    positions: list[int] = []
    release = threading.Event()

    def hold():
        with queue.slot():
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    while queue.running == 0:
        time.sleep(0.01)
    started = time.monotonic()
    with pytest.raises(Busy, match=r"position 1\).*Try again"):
        with queue.slot("your explanation", on_wait=positions.append):
            pass
    assert 0.5 < time.monotonic() - started < 3 and positions and set(positions) == {1}
    assert queue.waiting == 0  # a waiter that gave up leaves the line

    inside: list[str] = []
    finish = threading.Event()

    def work(name: str) -> None:
        with queue.slot():
            inside.append(name)
            finish.wait(5)

    queue.wait_s = 5
    release.set()
    holder.join()
    waiters = [threading.Thread(target=work, args=(name,)) for name in "ab"]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.3)
    assert len(inside) == 1 and queue.running == 1 and queue.waiting == 1  # one at a time; the other waits
    finish.set()
    for waiter in waiters:
        waiter.join()
    assert sorted(inside) == ["a", "b"] and queue.running == 0


def hold_slot(queue: WorkQueue, client: str | None = None) -> tuple[threading.Thread, threading.Event]:
    """A thread holding one of `queue`'s slots (for `client`) until the event is set."""
    release, holding = threading.Event(), threading.Event()

    def hold():
        with queue.slot(client=client):
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    return holder, release


def test_a_client_has_one_job_at_a_time_whatever_its_tabs_and_takes_its_turn():
    queue = WorkQueue(slots=1, wait_s=5, poll_s=0.02, per_client=1)
    holder, release = hold_slot(queue, client="address 10.0.0.7")
    # A second tab of the same client is told at once, not queued: it cannot fill the line.
    with pytest.raises(ClientBusy, match="already have a job running or waiting"):
        with queue.slot("your file", client="address 10.0.0.7"):
            pass
    assert queue.jobs("address 10.0.0.7") == 1 and queue.waiting == 0
    order: list[str] = []

    def job(client: str) -> None:
        with queue.slot(client=client):
            order.append(client)

    other = threading.Thread(target=job, args=("address 10.0.0.8",))
    other.start()
    while queue.waiting == 0:
        time.sleep(0.01)
    release.set()
    holder.join()
    # The first client asks again at once; the other, waiting since before, goes first (first come, first served).
    again = threading.Thread(target=job, args=("address 10.0.0.7",))
    again.start()
    for thread in (other, again):
        thread.join(5)
    assert order == ["address 10.0.0.8", "address 10.0.0.7"]
    assert queue.running == queue.waiting == queue.jobs("address 10.0.0.7") == 0  # every share handed back


def test_a_share_is_handed_back_when_a_job_fails_or_gives_up():
    queue = WorkQueue(slots=1, wait_s=0.2, poll_s=0.02, per_client=1)
    with pytest.raises(RuntimeError, match="boom"):
        with queue.slot(client="a"):
            raise RuntimeError("boom")
    holder, release = hold_slot(queue)
    with pytest.raises(Busy, match="position 1"):  # waited its 0.2 s in line
        with queue.slot(client="a"):
            pass
    release.set()
    holder.join()
    assert queue.jobs("a") == 0
    with queue.slot(client="a"):  # free to ask again
        assert queue.jobs("a") == 1


def test_clients_are_told_apart_by_address_or_else_by_session():
    assert runtime.client_key("203.0.113.5", "s1") == runtime.client_key("203.0.113.5", "s2")  # one client, two tabs
    assert runtime.client_key(None, "s1") != runtime.client_key(None, "s2")  # this machine: each session its own


def test_reading_an_upload_waits_in_the_heavy_line(monkeypatch):
    busy = WorkQueue(slots=1, wait_s=0.3, poll_s=0.05)
    monkeypatch.setattr(runtime, "HEAVY_WORK", busy)
    app = run_app(monkeypatch)
    with busy.slot():
        app.file_uploader(key="upload").upload("reviews.csv", b"text\nA fine film.\n", "text/csv").run()
    assert not app.exception and not app.get("selectbox")  # not read while the slot was held
    assert any("The server is busy: reading your file waited" in warning.value for warning in app.warning)
    app.run()  # the slot is free: read now, once
    assert app.selectbox(key="text_column").value == "text" and not app.warning


def test_a_single_prediction_takes_the_light_lane_not_the_heavy_one(monkeypatch):
    light = WorkQueue(slots=1, wait_s=0.3, poll_s=0.05, per_client=1)
    heavy = WorkQueue(slots=1, wait_s=0.3, poll_s=0.05)
    monkeypatch.setattr(runtime, "LIGHT_WORK", light)
    monkeypatch.setattr(runtime, "HEAVY_WORK", heavy)
    with heavy.slot():  # an explanation elsewhere holds the heavy slot: a typed review is still answered
        app = run_app(monkeypatch, review="A wonderful film.")
    assert any(block.value.startswith("## ") for block in app.markdown) and not app.warning
    with light.slot():  # the light lane full: the visitor is told, nothing is predicted
        app.text_area(key="review").input("A dreadful film.").run()
    assert any("The server is busy: your review waited" in warning.value for warning in app.warning)


def test_a_busy_server_tells_the_visitor_to_retry(monkeypatch):
    busy = WorkQueue(slots=1, wait_s=0.3, poll_s=0.05)
    monkeypatch.setattr(runtime, "HEAVY_WORK", busy)  # app.py looks it up there on each use
    with busy.slot():
        app = run_app(monkeypatch, review="A wonderful film.")
        app.button(key="explain").click().run()
    assert not app.exception and not app.get("html")
    assert any("The server is busy" in warning.value for warning in app.warning)


def test_the_model_loads_in_the_background_and_a_failure_can_be_retried():
    attempts, gate = [], threading.Event()

    def load(folder):
        attempts.append(folder)
        gate.wait(5)
        if len(attempts) == 1:
            raise OSError("disk hiccup")
        return "predictor"

    loader = ModelLoader("adapter", load=load)
    assert loader.state == "loading" and loader.wait(0.05) == "loading"  # the page goes on meanwhile
    gate.set()
    assert loader.wait(5) == "failed" and isinstance(loader.error, OSError)
    loader.retry()
    assert loader.wait(5) == "ready" and loader.predictor == "predictor" and len(attempts) == 2


def test_server_settings_bind_loopback_hide_tracebacks_and_bound_messages(monkeypatch):
    config = tomllib.loads((PROJECT_ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert config["client"]["showErrorDetails"] == "none"
    assert config["server"]["maxMessageSize"] == MAX_MESSAGE_MB < 200
    from streamlit.config import ShowErrorDetailsConfigOptions

    assert config["client"]["showErrorDetails"] in {option.value for option in ShowErrorDetailsConfigOptions}
    app = run_app(monkeypatch)
    assert app.text_area(key="review").max_chars == MAX_TYPED_CHARS


def test_dependency_ranges_hold_the_tested_versions_and_the_constraints_pin_them():
    from importlib.metadata import version

    from packaging.requirements import Requirement
    from packaging.version import Version

    pinned = {
        Requirement(line).name.lower(): Version(line.split("==")[1])
        for line in (PROJECT_ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    for dependency in tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        requirement = Requirement(dependency)
        installed = Version(version(requirement.name))
        assert requirement.specifier.contains(installed, prereleases=True), (dependency, installed)
        assert any(spec.operator == "<" for spec in requirement.specifier) or "==" in dependency, dependency
        assert pinned[requirement.name.lower()].public == installed.public, requirement.name
    assert Requirement(
        next(
            d
            for d in tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
            if d.startswith("torch")
        )
    ).specifier.contains("2.6.0")
