"""sentiment-bulk: score files of reviews with Ray Data, on this machine or a Ray cluster.

    sentiment-bulk --data reviews.csv --output scored/
    sentiment-bulk --data 'incoming/*.jsonl' --output scored/ --workers 4
    RAY_ADDRESS=auto sentiment-bulk --data /shared/reviews/ --output /shared/scored/     # on a running cluster

--data is a file, a folder or a glob of CSV, JSONL or Parquet files with a text column. Each file streams through
`map_batches` with a pool of Predictor actors (CPUs, or one GPU each when the cluster has GPUs) and becomes
OUTPUT/<name>.parquet: its rows and columns in order, plus the columns `inference/predict.py --file X --output Y`
adds (both built by inference/tables.py), written atomically. A rerun skips every file whose output exists, so an
interrupted run resumes where it stopped. Without RAY_ADDRESS a local Ray starts on this machine's CPUs.
Replaces inference/distributed.py (accelerate launch). Guide: docs/serving.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import glob
import json
import sys
import time
from pathlib import Path

from inference import options
from serving.cluster import cluster_resources, connect_ray
from serving.predictors import load_predictor, model_problem
from training import failures, storage
from training.errors import DataError, ModelLoadError
from training.paths import DEFAULT_MODEL_DIR
from training.readers import NO_LIMITS, ReadLimits

INPUT_SUFFIXES = (".csv", ".jsonl", ".parquet")
# Rows scored together, as this many forward batches: sorting a few batches' worth of reviews by length pads less,
# and the working set (token ids, frames) stays small whatever the size of the blocks Ray Data reads.
BATCHES_PER_CALL = 4
# Files scored in one pass through one actor pool (one model load per actor), each an open file until the pass
# ends: enough to amortise the load over many small files, few enough for the open-file limit.
FILES_PER_PASS = 32
# Rows of one file in one block, the unit an actor takes: a file read as one block would keep every actor but one
# idle, and a block still holds many batches' worth of reviews to sort by length.
ROWS_PER_BLOCK = 512
SOURCE_COLUMN = "__sentiment_source"  # the input file's index, carried through scoring and dropped on writing
# Left free of scoring actors for reading, decoding and writing: actors holding every CPU starve the read tasks.
IO_CPUS = 1.0
CPUS_PER_DEFAULT_WORKER = 4  # on CPUs, one worker per this many cores (fewer, larger workers batch better)


@dataclasses.dataclass(frozen=True)
class BulkConfig:
    data: str  # a file, a folder or a glob
    output: Path  # a folder: one <name>.parquet per input file
    model: Path = DEFAULT_MODEL_DIR
    text_column: str = "text"
    workers: int | None = None  # None: one per GPU, else one per CPUS_PER_DEFAULT_WORKER CPUs
    batch_size: int = 32
    device: str | None = None
    precision: str = "auto"
    uncertain_below: float | None = None
    trust_large_files: bool = False


@dataclasses.dataclass(frozen=True)
class WorkerPlan:
    """How many scoring actors, what each reserves from Ray, and the threads each computes with."""

    count: int
    num_cpus: float
    num_gpus: float
    threads: int | None


def worker_plan(workers: int | None, cpus: float, gpus: float) -> WorkerPlan:
    """One actor per GPU when there are GPUs; else `workers` (default: one per CPUS_PER_DEFAULT_WORKER CPUs)
    sharing every CPU but IO_CPUS, each computing with its share of the cores."""
    if gpus >= 1:
        return WorkerPlan(workers or int(gpus), num_cpus=1.0, num_gpus=1.0, threads=None)
    count = workers or max(1, int(cpus) // CPUS_PER_DEFAULT_WORKER)
    return WorkerPlan(
        count, num_cpus=max(cpus - IO_CPUS, 1.0) / count, num_gpus=0.0, threads=max(1, int(cpus) // count)
    )


# ----------------------------------------------------------------------------- inputs and outputs


def input_files(data: str) -> list[Path]:
    """The files --data names: itself, the CSV/JSONL/Parquet files in a folder, or a glob's matches; sorted."""
    path = Path(data)
    if path.is_dir():
        found = sorted(child for child in path.iterdir() if child.suffix.lower() in INPUT_SUFFIXES)
    elif path.exists():
        found = [path]
    else:
        found = sorted(Path(match) for match in glob.glob(data) if Path(match).suffix.lower() in INPUT_SUFFIXES)
    if not found:
        raise DataError(f"--data {data}: no {', '.join(INPUT_SUFFIXES)} files there. Give a file, a folder or a glob.")
    return found


def output_for(source: Path, output: Path) -> Path:
    return output / f"{source.stem}.parquet"


def column_names(path: Path) -> list[str]:
    """The columns of a file, read from its header (CSV), its first record (JSONL) or its footer (Parquet)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    if suffix == ".csv":
        import pandas as pd

        return [str(column) for column in pd.read_csv(path, nrows=0, encoding="utf-8").columns]
    with path.open(encoding="utf-8") as file:
        first = next((line for line in file if line.strip()), "{}")
    record = json.loads(first)
    return list(record) if isinstance(record, dict) else []


def input_problems(path: Path, text_column: str, limits: ReadLimits) -> list[str]:
    """What stops `path` from being scored, in training.readers.read_table's words (empty: nothing)."""
    if path.suffix.lower() not in INPUT_SUFFIXES:
        return [f"{path}: unsupported file type '{path.suffix or '(none)'}'. Use one of {', '.join(INPUT_SUFFIXES)}."]
    if path.stat().st_size == 0:
        return [f"{path} is empty."]
    try:
        columns = column_names(path)
    except Exception as error:  # pandas, pyarrow and json each raise their own types for a damaged file
        return [f"{path} could not be read as {path.suffix[1:]}: {type(error).__name__}: {error}"]
    if text_column not in columns:
        return [
            f"{path} has no '{text_column}' column (columns: {', '.join(columns) or '(none)'}). "
            f"Rename the column holding the reviews to '{text_column}' or pass its name."
        ]
    if limits.max_columns is not None and len(columns) > limits.max_columns:
        return [f"{path} has {len(columns):,} columns; this reader takes at most {limits.max_columns:,}. {limits.hint}"]
    return []


def read_dataset(path: Path, text_column: str):
    """A Ray dataset streaming `path`'s rows in order; the text column always read as text."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import ray.data

    where = str(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return ray.data.read_parquet(where, partitioning=None)
    if suffix == ".jsonl":
        return ray.data.read_json(where, lines=True, partitioning=None)
    return ray.data.read_csv(
        where,
        partitioning=None,
        parse_options=pacsv.ParseOptions(newlines_in_values=True),  # reviews may hold quoted line breaks
        convert_options=pacsv.ConvertOptions(column_types={text_column: pa.string()}),
    )


def tag_source(table, index: int):
    """`table` with the index of the file its rows came from, so scored rows find their way to its output."""
    import pyarrow as pa

    return table.append_column(SOURCE_COLUMN, pa.array([index] * table.num_rows, pa.int32()))


def write_by_source(tables, paths: list[Path]) -> list[int]:
    """Stream tagged Arrow tables into one Parquet file per source (paths[tag]); rows per file.

    Every file is written beside its destination and published (fsynced and renamed, training/storage.py) only
    when the stream has ended without an error; on an error none is, and a rerun scores them again."""
    import pyarrow.parquet as pq

    rows, writers = [0] * len(paths), {}
    with contextlib.ExitStack() as stack:
        for table in tables:
            index = table[SOURCE_COLUMN][0].as_py()
            table = table.drop_columns([SOURCE_COLUMN])
            if index not in writers:
                file = stack.enter_context(storage.atomic_writer(paths[index], "wb"))
                writers[index] = pq.ParquetWriter(file, table.schema)
                stack.callback(writers[index].close)  # closed before its file is published (the stack unwinds LIFO)
            writers[index].write_table(table.cast(writers[index].schema))
            rows[index] += table.num_rows
    return rows


# ----------------------------------------------------------------------------- the scoring actor


class ScoreBatch:
    """One Predictor per actor, loaded once; each call scores a batch of rows as inference/predict.py does.

    A call gets an Arrow batch of a file's rows and returns them with the prediction columns, typed the same
    for every batch (so the batches of one file make one Parquet file)."""

    def __init__(self, config: BulkConfig, threads: int | None):
        import pyarrow as pa

        from inference.tables import predict_table

        self.config = config
        self.limits = NO_LIMITS if config.trust_large_files else ReadLimits()
        self.predictor = load_predictor(config.model, config.device, config.precision, threads)
        # The columns predict_table adds, from a real row (a warm-up), so they stay inference/tables.py's.
        sample = predict_table(self.predictor, ["A warm-up review."], 1, False, config.uncertain_below)[0]
        self.prediction_fields = [
            pa.field(name, pa.string() if isinstance(value, str) else pa.float64()) for name, value in sample.items()
        ]

    def __call__(self, block):
        """A block of one file's rows (never rows of two files: see `score_pass`), scored a slice at a time so
        the working set stays a few batches whatever the block's size."""
        import pyarrow as pa

        step = self.config.batch_size * BATCHES_PER_CALL
        return pa.concat_tables(
            [self._score(block.slice(start, step)) for start in range(0, max(block.num_rows, 1), step)]
        )

    def _score(self, batch):
        import pyarrow as pa

        from inference.tables import attach_predictions, predict_table
        from training.readers import cut_long_cells

        text = self.config.text_column
        frame = cut_long_cells(batch.to_pandas(), self.limits.max_cell_chars)  # as read_table cuts them
        frame[text] = frame[text].fillna("").astype(str)
        rows = predict_table(
            self.predictor, frame[text].tolist(), self.config.batch_size, False, self.config.uncertain_below
        )
        added = {field.name for field in self.prediction_fields}
        kept = [
            pa.field(field.name, pa.string()) if field.name == text else field
            for field in batch.schema
            if field.name not in added
        ]
        schema = pa.schema(kept + self.prediction_fields)
        scored = attach_predictions(frame, rows).reindex(columns=schema.names)
        return pa.Table.from_pandas(scored, schema=schema, preserve_index=False)


# ----------------------------------------------------------------------------- the command


def parse_args(argv: list[str] | None = None) -> BulkConfig:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="A CSV, JSONL or Parquet file, a folder of them, or a glob.")
    parser.add_argument("--output", type=Path, required=True, help="Folder for the scored files (<name>.parquet).")
    options.add_model(parser)
    options.add_text_column(parser, "--data")
    parser.add_argument(
        "--workers",
        type=options.positive_int,
        default=None,
        help=f"Scoring actors (default: one per GPU, else one per {CPUS_PER_DEFAULT_WORKER} CPUs).",
    )
    options.add_batch_size(parser, default=32)
    options.add_device(parser)
    options.add_precision(parser)
    parser.add_argument(
        "--uncertain-below",
        type=float,
        default=None,
        help="Add a verdict column: the label, or UNCERTAIN below this confidence (as inference/predict.py).",
    )
    parser.add_argument(
        "--trust-large-files",
        action="store_true",
        help=f"Keep cells longer than {ReadLimits().max_cell_chars:,} characters and files of more than "
        f"{ReadLimits().max_columns:,} columns (rows and bytes are never limited: files stream).",
    )
    config = BulkConfig(**vars(parser.parse_args(argv)))
    if config.uncertain_below is not None and not 0 <= config.uncertain_below <= 1:
        parser.error(f"--uncertain-below must be a probability between 0 and 1, not {config.uncertain_below}")
    return config


def score_pass(sources: list[Path], outputs: list[Path], config: BulkConfig, plan: WorkerPlan) -> list[int]:
    """Score `sources` through one pool of plan.count actors and write outputs[i] for sources[i]; rows per file.

    The files' datasets are chained (union) into one stream, each block tagged with its file. The actors take whole
    blocks (batch_size=None), so rows of files with different columns are never put in one batch; Ray Data keeps each
    file's blocks in order (preserve_order), though blocks of different files interleave."""
    import ray.data

    datasets = [
        read_dataset(source, config.text_column)
        .repartition(target_num_rows_per_block=ROWS_PER_BLOCK)  # streaming, within this file only
        .map_batches(functools.partial(tag_source, index=index), batch_format="pyarrow", batch_size=None)
        for index, source in enumerate(sources)
    ]
    stream = datasets[0].union(*datasets[1:]) if len(datasets) > 1 else datasets[0]
    scored = stream.map_batches(
        ScoreBatch,
        fn_constructor_kwargs={"config": config, "threads": plan.threads},
        batch_size=None,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=plan.count),
        num_cpus=plan.num_cpus,
        num_gpus=plan.num_gpus,
    )
    return write_by_source(scored.iter_batches(batch_format="pyarrow", batch_size=None), outputs)


def main(config: BulkConfig) -> dict:
    """Score every input file without an output yet; returns what was scored, skipped and found empty, and how fast."""
    import ray.data

    files = input_files(config.data)
    outputs = {source: output_for(source, config.output) for source in files}
    clashes = sorted({str(out) for out in outputs.values() if list(outputs.values()).count(out) > 1})
    if clashes:
        raise DataError(f"Several inputs would be written to {', '.join(clashes)}: give files with different names.")
    if config.output.exists() and not config.output.is_dir():
        raise DataError(f"--output {config.output} is a file; give a folder for the scored files.")
    pending = [source for source in files if not outputs[source].exists()]
    limits = NO_LIMITS if config.trust_large_files else ReadLimits()
    problems = [problem for source in pending for problem in input_problems(source, config.text_column, limits)]
    if problems:
        raise DataError(" ".join(problems))
    unservable = model_problem(config.model)
    if unservable:
        raise ModelLoadError(f"--model: {unservable}")
    config.output.mkdir(parents=True, exist_ok=True)
    summary = {"scored": [], "skipped": [str(s) for s in files if s not in pending], "empty": [], "rows": 0}
    if not pending:
        return {**summary, "workers": 0, "seconds": 0.0}
    connect_ray()
    ray.data.DataContext.get_current().execution_options.preserve_order = True  # each file's rows stay in order
    cpus, gpus = cluster_resources()
    plan = worker_plan(config.workers, cpus, 0.0 if config.device == "cpu" else gpus)  # --device cpu leaves GPUs be
    started = time.perf_counter()
    for first in range(0, len(pending), FILES_PER_PASS):
        sources = pending[first : first + FILES_PER_PASS]
        rows = score_pass(sources, [outputs[source] for source in sources], config, plan)
        for source, count in zip(sources, rows):
            summary["scored" if count else "empty"].append(str(outputs[source] if count else source))
            print(
                f"{source}: {f'{count:,} rows scored into {outputs[source]}' if count else 'no rows'}", file=sys.stderr
            )
        summary["rows"] += sum(rows)
    return {**summary, "workers": plan.count, "seconds": round(time.perf_counter() - started, 3)}


def cli(argv: list[str] | None = None) -> int:
    try:
        summary = main(parse_args(argv))
    except (DataError, ModelLoadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


def run(argv: list[str] | None = None) -> int:
    """The sentiment-bulk console script: cli(), anything unexpected as one line and a log (training/failures.py)."""
    return failures.guard("bulk", cli, argv)


if __name__ == "__main__":
    sys.exit(run())
