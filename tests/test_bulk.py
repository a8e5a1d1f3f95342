"""sentiment-bulk (serving/bulk.py): files scored with Ray Data equal `inference/predict.py --file` row for row,
each in its own Parquet file, written atomically, and a rerun skips what is done. The file checks, the worker
plan and the atomic writer are tested without Ray; the scoring runs on a real local Ray with the tiny adapter."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow as pa
import pytest

from serving import bulk
from tests.test_serving import local_ray  # noqa: F401  (one Ray for the session, shared with test_serving.py)
from training.errors import DataError
from training.readers import ReadLimits

# fp32 probabilities from differently composed batches agree to float rounding; they are written to 6 decimals.
PROBABILITY_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def three_files(tmp_path_factory, small_imdb) -> list:
    """The same kind of reviews as CSV, JSONL and Parquet, with an empty review and a column of their own each."""
    folder = tmp_path_factory.mktemp("bulk_in")
    reviews = pd.read_parquet(small_imdb / "test.parquet").head(36).reset_index(drop=True)
    reviews.loc[4, "text"] = ""
    parts = [reviews.iloc[:12].copy(), reviews.iloc[12:24].copy(), reviews.iloc[24:].copy()]
    parts[0]["source"] = "csv"
    parts[1]["stars"] = range(12)
    parts[0].to_csv(folder / "first.csv", index=False)
    parts[1].to_json(folder / "second.jsonl", orient="records", lines=True)
    parts[2].to_parquet(folder / "third.parquet")
    (folder / "notes.txt").write_text("not a table: --data as a folder takes CSV, JSONL and Parquet only")
    return [folder / "first.csv", folder / "second.jsonl", folder / "third.parquet"]


# ----------------------------------------------------------------------------- without Ray


def test_data_can_be_a_file_a_folder_or_a_glob(three_files):
    folder = three_files[0].parent
    assert bulk.input_files(str(folder)) == three_files  # sorted; notes.txt left out
    assert bulk.input_files(str(three_files[1])) == [three_files[1]]
    assert bulk.input_files(str(folder / "*.jsonl")) == [three_files[1]]
    with pytest.raises(DataError, match="no .csv, .jsonl, .parquet files"):
        bulk.input_files(str(folder / "*.xlsx"))


def test_files_without_the_text_column_are_all_named_before_anything_runs(tmp_path):
    pd.DataFrame({"review": ["Great"]}).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame({"body": ["Bad"]}).to_parquet(tmp_path / "b.parquet")
    (tmp_path / "c.jsonl").write_bytes(b"")
    config = bulk.BulkConfig(data=str(tmp_path), output=tmp_path / "out")
    with pytest.raises(DataError) as refusal:
        bulk.main(config)
    message = str(refusal.value)
    assert "a.csv has no 'text' column (columns: review)" in message and "b.parquet has no 'text' column" in message
    assert "c.jsonl is empty" in message
    assert not (tmp_path / "out").exists()


def test_too_many_columns_are_refused_unless_trusted(tmp_path):
    path = tmp_path / "wide.csv"
    pd.DataFrame({f"c{i}": [1] for i in range(5)} | {"text": ["ok"]}).to_csv(path, index=False)
    assert "at most 3" in bulk.input_problems(path, "text", ReadLimits(max_columns=3))[0]
    assert bulk.input_problems(path, "text", ReadLimits()) == []


def test_workers_take_the_gpus_or_share_the_cpus_leaving_one_for_io():
    assert bulk.worker_plan(None, cpus=16, gpus=2) == bulk.WorkerPlan(2, num_cpus=1.0, num_gpus=1.0, threads=None)
    assert bulk.worker_plan(2, cpus=2, gpus=0) == bulk.WorkerPlan(2, num_cpus=0.5, num_gpus=0.0, threads=1)
    assert bulk.worker_plan(None, cpus=2, gpus=0) == bulk.WorkerPlan(1, num_cpus=1.0, num_gpus=0.0, threads=2)
    plan = bulk.worker_plan(None, cpus=64, gpus=0)
    assert plan.count == 16 and math.isclose(plan.num_cpus * plan.count, 63) and plan.threads == 4


def test_an_interrupted_pass_publishes_no_file_and_leaves_no_temporary(tmp_path):
    def tables():
        yield bulk.tag_source(pa.table({"text": ["a"], "confidence": [0.5]}), index=0)
        yield bulk.tag_source(pa.table({"text": ["b"], "confidence": [0.6]}), index=1)
        raise RuntimeError("a worker died")

    with pytest.raises(RuntimeError):
        bulk.write_by_source(tables(), [tmp_path / "a.parquet", tmp_path / "b.parquet"])
    assert list(tmp_path.iterdir()) == []


def test_rows_are_routed_to_their_files_output(tmp_path):
    tables = [
        bulk.tag_source(pa.table({"text": ["a1", "a2"]}), index=0),
        bulk.tag_source(pa.table({"text": ["b1"]}), index=1),
        bulk.tag_source(pa.table({"text": ["a3"]}), index=0),
    ]
    paths = [tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "c.parquet"]
    assert bulk.write_by_source(iter(tables), paths) == [3, 1, 0]
    assert pd.read_parquet(paths[0])["text"].tolist() == ["a1", "a2", "a3"] and not paths[2].exists()
    assert list(pd.read_parquet(paths[1]).columns) == ["text"]  # the source tag is not written


# ----------------------------------------------------------------------------- on a real local Ray


def reference_rows(source, tiny_adapter, folder):
    """What `python inference/predict.py --file source --output folder/<name>.csv` writes, read back."""
    from inference.predict import main, parse_args

    output = folder / f"{source.stem}.csv"
    main(
        parse_args(
            ["--file", str(source), "--output", str(output), "--model", str(tiny_adapter), "--precision", "fp32"]
        )
    )
    return pd.read_csv(output, keep_default_na=False, dtype={"text": str, "predicted_label": str, "error": str})


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_a_folder_of_three_files_scores_like_predict_file_and_a_rerun_skips_them(three_files, tiny_adapter, tmp_path):
    output = tmp_path / "scored"
    config = bulk.BulkConfig(
        data=str(three_files[0].parent), output=output, model=tiny_adapter, workers=2, precision="fp32"
    )
    summary = bulk.main(config)
    assert summary["rows"] == 36 and summary["workers"] == 2 and not summary["skipped"] and not summary["empty"]
    assert sorted(path.name for path in output.iterdir()) == ["first.parquet", "second.parquet", "third.parquet"]
    for source in three_files:
        expected = reference_rows(source, tiny_adapter, tmp_path)
        got = pd.read_parquet(output / f"{source.stem}.parquet")
        assert list(got.columns) == list(expected.columns)
        for column in ("text", "predicted_label", "error"):
            assert got[column].fillna("").tolist() == expected[column].tolist(), column
        for column in ("confidence", "p_negative", "p_positive"):
            wanted = pd.to_numeric(expected[column], errors="coerce")
            assert (got[column].isna() == wanted.isna()).all()
            assert ((got[column] - wanted).abs().fillna(0) <= PROBABILITY_TOLERANCE).all(), column
        assert got["error"].tolist().count("empty text") == (1 if source.suffix == ".csv" else 0)
    written = {path.name: path.stat().st_mtime_ns for path in output.iterdir()}

    again = bulk.main(config)  # a rerun skips every file whose output exists: no Ray work at all
    assert again["scored"] == [] and again["skipped"] == [str(source) for source in three_files]
    assert {path.name: path.stat().st_mtime_ns for path in output.iterdir()} == written
