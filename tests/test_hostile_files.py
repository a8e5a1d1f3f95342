"""Hostile files (issue #20, "Untrusted inputs stay untrusted"): each is made here at test time and handed to the
app's reader (webapp.uploads.parse_upload, what the page calls) and to the command line (inference/predict.py run
as a script), each run in a process of its own whose peak memory is measured. Each must end in one clear message,
within a memory bound, with the file left as it was; a good file with unusual line separators keeps every review
whole. Before the fix, the wide-key JSON lines asked pandas for about 28 GiB and the forged Parquet file decoded
its 572 MB before anything was checked.

One harness process per reader imports it once (the command line's imports take seconds: PyTorch), then forks a
child per file, so each file's peak memory is its own: ru_maxrss of that child, less that of a child that read a
small file to its end and refused it (no rows), as the hostile files are refused. Each child runs under an address-space limit, so a guard that goes missing fails the test with
a MemoryError instead of taking the machine's memory.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from training import readers, shapes
from training.errors import DataError
from training.paths import DEFAULT_MODEL_DIR, PROJECT_ROOT
from training.readers import (
    MAX_PARQUET_PAGES,
    MAX_PARQUET_ROW_GROUPS,
    NO_LIMITS,
    ReadLimits,
    cut_middle,
    read_table,
    split_lines,
)
from webapp.uploads import MAX_BATCH_ROWS, MAX_COLUMNS, MAX_DECODED_MB, MAX_UPLOAD_MB

MB = 2**20
CLI_LIMITS = ReadLimits()
# What reading a refused file may cost over reading a small good one: a copy or two of its bytes (the upload, the
# temporary copy, the text decoded from it) and a fixed allowance for pandas' and pyarrow's buffers. The bound by
# construction: every check runs on the bytes or one row or batch at a time, so nothing grows with what a file
# declares (columns, rows, decoded size); only with its length.
BYTES_FACTOR = 3
FIXED_ALLOWANCE_MB = 48
# Each child may map this much more than the harness: a missing guard ends in a MemoryError, not in swap.
HEADROOM_BYTES = 2**30
REVIEW_WITH_SEPARATORS = "A fine film\u2028with a twist;\u0085the end\x0cis weak."

HARNESS = r"""
import json, os, resource, runpy, sys
mode, jobs, warm_up, headroom = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
if mode == "cli":
    import inference.predict  # PyTorch and the readers, once: each child only runs the script
else:
    from training.errors import DataError
    from webapp.uploads import parse_upload


def app_job(job):
    try:
        frame = parse_upload(job["name"], open(job["path"], "rb").read(), "upload", None)[2]
    except DataError as error:
        print(json.dumps({"error": str(error)}))
        return 2
    print(json.dumps({"columns": [str(column) for column in frame.columns], "texts": frame.iloc[:, 0].astype(str).tolist()[:5]}))
    return 0


def cli_job(job):
    sys.argv = ["inference/predict.py", *job["argv"]]
    try:
        runpy.run_path("inference/predict.py", run_name="__main__")
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 1
    return 0


def address_space():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024


# Good files of each kind read here first, so that what reading loads on first use is loaded before the forks.
saved = os.dup(1), os.dup(2)
quiet = os.open(os.devnull, os.O_WRONLY)
os.dup2(quiet, 1)
os.dup2(quiet, 2)
for job in warm_up:
    cli_job(job) if mode == "cli" else app_job(job)
sys.stdout.flush()
sys.stderr.flush()
os.dup2(saved[0], 1)
os.dup2(saved[1], 2)

for job in jobs:
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        if job.get("stdin") is not None:
            stdin_read, stdin_write = os.pipe()
            os.write(stdin_write, job["stdin"].encode("utf-8"))
            os.close(stdin_write)
            os.dup2(stdin_read, 0)
        limit = address_space() + headroom
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            code = cli_job(job) if mode == "cli" else app_job(job)
        except BaseException as error:
            print(f"harness: {type(error).__name__}: {error}")
            code = 99
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read().decode("utf-8", "replace")
    _, status, usage = os.wait4(child, 0)
    result = {"name": job["name"], "code": os.waitstatus_to_exitcode(status), "output": output}
    print(json.dumps({**result, "peak_mb": usage.ru_maxrss / 1024}), flush=True)
"""


# ----------------------------------------------------------------------------- the hostile files


def wide_keys_jsonl(path) -> None:
    """5,000 lines of 150 keys each, no key on two lines: pandas makes 750,000 columns of 5,000 rows (~28 GiB)."""
    lines = (
        "{" + ",".join(f'"{key:05x}":0' for key in range(line * 150, (line + 1) * 150)) + "}" for line in range(5000)
    )
    path.write_text("\n".join(lines) + "\n")


def comma_header_csv(path) -> None:
    """A first line of 10 MB of commas: 10 million column names before any count was checked."""
    path.write_bytes(b"text" + b"," * (MAX_UPLOAD_MB * MB - 100) + b"\nA fine film.\n")


def newline_flood_txt(path) -> None:
    """10 MB of line breaks: 10 million rows, built as a list before the row limit was checked."""
    path.write_bytes(b"A fine film.\n" + b"\n" * (MAX_UPLOAD_MB * MB - 100))


def varint(value: int, length: int = 1) -> bytes:
    """`value` as a Thrift compact-protocol varint of at least `length` bytes (padding is legal, so a patched
    number keeps the footer's length)."""
    out = bytearray()
    while True:
        out.append(value & 0x7F | 0x80)
        value >>= 7
        if value == 0 and len(out) >= length:
            break
    out[-1] &= 0x7F
    return bytes(out)


def forge_footer(path, lies: dict[int, int]) -> None:
    """Patch the i64 fields of a Parquet footer that hold each key of `lies` (a field header, then the zigzag
    varint) to say its value instead, as a writer who lies would."""
    data = path.read_bytes()
    length = int.from_bytes(data[-8:-4], "little")
    footer = data[-8 - length : -8]
    for true, false in lies.items():
        told = b"\x16" + varint(true << 1)  # field id +1, type i64; zigzag of a positive number is twice it
        assert told in footer, true
        footer = footer.replace(told, b"\x16" + varint(false << 1, len(told) - 1))
    path.write_bytes(data[: -8 - length] + footer + data[-8:])


def forged_footer_parquet(path, groups: int = 40, rows: int = 100, value_chars: int = 150_000) -> None:
    """4,000 distinct reviews of 150,000 characters (572 MB decoded, 100 KB on disk: zstd), whose footer says the
    file holds 50 rows and 41 KB."""
    schema = pa.schema([("id", pa.int64()), ("text", pa.string())])
    options = dict(compression="zstd", use_dictionary=False, write_statistics=False, store_schema=False)
    with pq.ParquetWriter(path, schema, **options) as writer:
        for group in range(groups):
            ids = range(group * rows, (group + 1) * rows)
            texts = [f"{row:08d}" + "a" * value_chars for row in ids]
            writer.write_table(pa.table({"id": pa.array(ids, pa.int64()), "text": texts}, schema=schema))
    metadata = pq.ParquetFile(path).metadata
    lies = {metadata.row_group(index).total_byte_size: 1000 + index for index in range(groups)}
    forge_footer(path, {**lies, metadata.num_rows: 50})


def many_row_groups_parquet(path) -> None:
    """More row groups than MAX_PARQUET_ROW_GROUPS, a row each: small, and slow to read one group at a time."""
    rows = MAX_PARQUET_ROW_GROUPS + 500
    pq.write_table(pa.table({"text": [f"review {row}" for row in range(rows)]}), path, row_group_size=1)


def write_files(folder) -> dict:
    makers = {
        "wide_keys.jsonl": wide_keys_jsonl,
        "comma_header.csv": comma_header_csv,
        "newline_flood.txt": newline_flood_txt,
        "forged_footer.parquet": forged_footer_parquet,
        "many_row_groups.parquet": many_row_groups_parquet,
    }
    texts = {
        "good.csv": "text\nA fine film.\nA dull one.\n",
        "separators.txt": f"First review.\r\n{REVIEW_WITH_SEPARATORS}\r\nLast review.\r\n",
        "long_number.jsonl": '{"text": "fine"}\n{"text": 1' + "0" * 30 + "}\n",
        "nested_list.jsonl": '{"text": [' + ",".join(["1"] * 30_000) + "]}\n",
        "nested_object.jsonl": '{"text": "fine", "meta": {"stars": 5}}\n',
        "nested.json": '[{"text": "fine"}, {"text": {"inner": "a dict where a review goes"}}]',
        "reviews.csv": "text\nA fine film.\n",
        "no_rows.csv": "text\n",  # the baseline: read through, then refused, as the hostile files are
        "good.jsonl": '{"text": "A fine film."}\n{"text": "A dull one."}\n',
        "good.txt": "A fine film.\nA dull one.\n",
    }
    paths = {}
    for name, maker in makers.items():
        maker(folder / name)
        paths[name] = folder / name
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")
        paths[name] = folder / name
    pq.write_table(pa.table({"text": ["A fine film.", "A dull one."]}), folder / "good.parquet")
    paths["good.parquet"] = folder / "good.parquet"
    paths["link.csv"] = folder / "link.csv"
    paths["link.csv"].symlink_to(folder / "reviews.csv")
    return paths


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    return write_files(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def digests(files) -> dict:
    return {name: digest(path) for name, path in files.items()}


def run_harness(mode: str, jobs: list[dict], warm_up: list[dict]) -> dict:
    """Each job's result, and its peak memory less that of the first job (the baseline: a small file refused)."""
    done = subprocess.run(
        [sys.executable, "-c", HARNESS, mode, json.dumps(jobs), json.dumps(warm_up), str(HEADROOM_BYTES)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = {result["name"]: result for result in map(json.loads, done.stdout.splitlines())}
    baseline = results.pop("baseline")["peak_mb"]
    return {name: {**result, "extra_mb": result["peak_mb"] - baseline} for name, result in results.items()}


GOOD_FILES = ("good.csv", "good.jsonl", "good.txt", "good.parquet")
APP_FILES = (
    "wide_keys.jsonl",
    "comma_header.csv",
    "newline_flood.txt",
    "forged_footer.parquet",
    "many_row_groups.parquet",
    "long_number.jsonl",
    "nested_list.jsonl",
    "nested_object.jsonl",
    "nested.json",
    "separators.txt",
)


@pytest.fixture(scope="module")
def app_runs(files, digests) -> dict:
    jobs = [{"name": name, "path": str(files[name])} for name in ("no_rows.csv", *APP_FILES)]
    jobs[0]["name"] = "baseline"
    return run_harness("app", jobs, [{"name": name, "path": str(files[name])} for name in GOOD_FILES])


@pytest.fixture(scope="module")
def cli_runs(files, digests, tmp_path_factory) -> dict:
    missing_model = str(tmp_path_factory.mktemp("no_model") / "adapter")
    jobs = [{"name": "baseline", "argv": ["--file", str(files["no_rows.csv"]), "--model", missing_model]}]
    jobs += [{"name": name, "argv": ["--file", str(files[name]), "--model", missing_model]} for name in APP_FILES]
    folder = files["reviews.csv"].parent
    jobs += [
        {  # the same file, spelled another way
            "name": "same_file_output",
            "argv": ["--file", str(files["reviews.csv"]), "--output", f"{folder}/../{folder.name}/reviews.csv"],
        },
        {"name": "symlinked_output", "argv": ["--file", str(files["good.csv"]), "--output", str(files["link.csv"])]},
        {  # a good file, through the shipped model: every review whole
            "name": "separators_scored",
            "argv": ["--file", str(files["separators.txt"]), "--model", str(DEFAULT_MODEL_DIR), "--json"],
        },
        {
            "name": "separators_stdin",
            "argv": ["--model", str(DEFAULT_MODEL_DIR), "--json"],
            "stdin": files["separators.txt"].read_text(encoding="utf-8"),
        },
    ]
    warm_up = [{"name": name, "argv": ["--file", str(files[name]), "--model", missing_model]} for name in GOOD_FILES]
    return run_harness("cli", jobs, warm_up)


# What each reader must say: (the app's words, the command line's words) for each hostile file.
REFUSALS = {
    "wide_keys.jsonl": (
        f"more than {MAX_COLUMNS} different keys by line 2 (each key is a column)",
        f"more than {CLI_LIMITS.max_columns:,} different keys by line 7",
    ),
    "comma_header.csv": (
        f"has 10,485,661 columns; this reader takes at most {MAX_COLUMNS}",
        f"has 10,485,661 columns; this reader takes at most {CLI_LIMITS.max_columns:,}",
    ),
    "newline_flood.txt": (f"more than {MAX_BATCH_ROWS:,} rows", f"more than {CLI_LIMITS.max_rows:,} rows"),
    "forged_footer.parquet": (
        f"decompresses to 572.3 MB (so its pages say); this reader takes up to {MAX_DECODED_MB:.1f} MB",
        f"decompresses to 572.3 MB (so its pages say); this reader takes up to {CLI_LIMITS.max_bytes // MB:.1f} MB",
    ),
    "many_row_groups.parquet": (f"has 1,500 row groups; this reader takes at most {MAX_PARQUET_ROW_GROUPS:,}",) * 2,
    "long_number.jsonl": ("has a number too long for a number column ('text', line 2); quote it",) * 2,
    "nested_list.jsonl": ("has a nested object or list on line 1",) * 2,
    "nested_object.jsonl": ("has a nested object or list on line 1",) * 2,
    "nested.json": (
        "the app reads .csv, .txt, .jsonl, .parquet files, not '.json'",
        "has a row (2) that is not a flat object of text and numbers",
    ),
}


def memory_bound_mb(path) -> float:
    return BYTES_FACTOR * path.stat().st_size / MB + FIXED_ALLOWANCE_MB


@pytest.mark.parametrize("name", list(REFUSALS))
def test_the_app_refuses_a_hostile_upload_in_one_message_within_bounded_memory(name, files, digests, app_runs):
    run = app_runs[name]
    assert run["code"] == 2, run["output"]
    (line,) = run["output"].strip().splitlines()
    message = json.loads(line)["error"]
    assert REFUSALS[name][0] in message and str(files[name].parent) not in message, message
    assert run["extra_mb"] < memory_bound_mb(files[name]), f"{name}: {run['extra_mb']:.0f} MB over a good file's read"
    assert digest(files[name]) == digests[name]


@pytest.mark.parametrize("name", list(REFUSALS))
def test_the_command_line_refuses_a_hostile_file_in_one_line_within_bounded_memory(name, files, digests, cli_runs):
    run = cli_runs[name]
    assert run["code"] == 2, run["output"]
    (line,) = run["output"].strip().splitlines()
    assert line.startswith("error: ") and REFUSALS[name][1] in line, line
    assert run["extra_mb"] < memory_bound_mb(files[name]), f"{name}: {run['extra_mb']:.0f} MB over a good file's read"
    assert digest(files[name]) == digests[name]


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("same_file_output", "is the --file being read; write the predictions to a new file"),
        ("symlinked_output", "is a symbolic link; give the path of a regular file"),
    ],
)
def test_the_command_line_never_writes_over_its_input_or_through_a_link(name, words, files, digests, cli_runs):
    run = cli_runs[name]
    assert run["code"] == 2, run["output"]
    (line,) = run["output"].strip().splitlines()
    assert line.startswith("error: --output ") and words in line, line
    for kept in ("reviews.csv", "good.csv", "link.csv"):  # the link too: still a link, to the same file
        assert digest(files[kept]) == digests[kept]
    assert files["link.csv"].is_symlink() and files["link.csv"].resolve() == files["reviews.csv"]


def test_a_review_with_unicode_line_separators_stays_one_review(files, app_runs, cli_runs):
    expected = ["First review.", REVIEW_WITH_SEPARATORS, "Last review."]
    assert json.loads(app_runs["separators.txt"]["output"])["texts"] == expected
    for name in ("separators_scored", "separators_stdin"):
        run = cli_runs[name]
        assert run["code"] == 0, run["output"]
        # Split at "\n" only: str.splitlines would cut the printed rows at U+2028, as it used to cut the reviews.
        rows = [json.loads(line) for line in run["output"].split("\n") if line.startswith("{")]
        assert [row["text"] for row in rows] == expected, name
        assert all(row["predicted_label"] in ("NEGATIVE", "POSITIVE") for row in rows)


def test_the_hostile_files_are_what_they_claim(files):
    """The fixtures stay hostile: sizes within an upload, footers that lie, more of everything than the limits."""
    assert all(files[name].stat().st_size <= MAX_UPLOAD_MB * MB for name in REFUSALS)
    assert 6.5 * MB < files["wide_keys.jsonl"].stat().st_size < 8 * MB
    forged = pq.ParquetFile(files["forged_footer.parquet"])
    declared = sum(forged.metadata.row_group(index).total_byte_size for index in range(forged.metadata.num_row_groups))
    assert forged.metadata.num_rows == 50 and declared < 100_000  # what the footer says ...
    decoded = sum(batch.nbytes for batch in forged.iter_batches(batch_size=500))  # ... and what it holds
    assert decoded > CLI_LIMITS.max_bytes and files["forged_footer.parquet"].stat().st_size < 200_000


# ----------------------------------------------------------------------------- what the readers check, in this process


def test_reviews_are_split_at_line_breaks_only():
    assert split_lines("a\r\nb\u2028c\x85d\x0ce\n\nf") == ["a", "b\u2028c\x85d\x0ce", "", "f"]
    assert split_lines("") == [] and split_lines("\n") == [""] and split_lines("x\n") == ["x"]


def test_cells_that_are_not_text_become_text_and_are_cut(tmp_path):
    limits = ReadLimits(max_cell_chars=8)
    (tmp_path / "numbers.jsonl").write_text('{"text": 123456789012345, "id": 1}\n')
    (tmp_path / "floats.jsonl").write_text('{"text": 1.5e300, "id": 2}\n')
    pq.write_table(pa.table({"text": [123456789012345], "id": [1]}), tmp_path / "numbers.parquet")
    for name in ("numbers.jsonl", "numbers.parquet"):
        frame = read_table(tmp_path / name, limits=limits)
        assert frame["text"][0] == cut_middle("123456789012345", 8) == "12342345", name
        assert frame["id"].tolist()[0] == 1  # other columns keep their numbers
    assert read_table(tmp_path / "floats.jsonl", limits=limits)["text"][0] == cut_middle(str(1.5e300), 8)


def test_a_csv_is_counted_as_pandas_splits_it_before_pandas_sees_it(tmp_path, monkeypatch):
    quoted = tmp_path / "quoted.csv"  # commas and line breaks inside quotes belong to one field
    quoted.write_text('text,label\r\n"a, b, c, d, e, f",1\r\n\r\n"two\nlines, and, commas",0\nplain "quote",1\n')
    frame = read_table(quoted, limits=ReadLimits(max_columns=2, max_rows=3))
    assert frame["text"].tolist() == ["a, b, c, d, e, f", "two\nlines, and, commas", 'plain "quote"']

    monkeypatch.setattr(pd, "read_csv", lambda *args, **kwargs: pytest.fail("pandas was handed the file"))
    wide_row = tmp_path / "wide_row.csv"
    wide_row.write_text("text\nfine\n" + '"a",' * 50 + "\n")
    with pytest.raises(DataError, match="has more than 5 fields on row 2; this reader takes at most 5 columns"):
        read_table(wide_row, limits=ReadLimits(max_columns=5))
    many = tmp_path / "many.csv"
    many.write_text("text\n" + "fine\n\n" * 6)  # blank lines are not rows, as pandas skips them
    with pytest.raises(DataError, match="has more than 5 rows"):
        read_table(many, limits=ReadLimits(max_rows=5))


def test_json_lines_are_checked_line_by_line_before_anything_is_built(tmp_path, monkeypatch):
    wide_line = tmp_path / "wide_line.jsonl"
    wide_line.write_text('{"text": "fine"}\n{' + ",".join(f'"k{key}": 0' for key in range(300)) + "}\n")
    loads = readers.json.loads

    def loads_short(row, **kwargs):  # line 1 is parsed; line 2 must be refused before it is
        return loads(row, **kwargs) if len(row) < 100 else pytest.fail(f"json.loads built {row[:30]}")

    monkeypatch.setattr(readers.json, "loads", loads_short)
    monkeypatch.setattr(pd, "read_json", lambda *args, **kwargs: pytest.fail("pandas was handed the file"))
    with pytest.raises(DataError, match=r"has 300 keys on line 2 \(a column each\); this reader takes at most 200"):
        read_table(wide_line, limits=ReadLimits(max_columns=200))
    not_rows = tmp_path / "not_rows.jsonl"
    not_rows.write_text("[" + ",".join(["1"] * 1000) + "]\n")
    with pytest.raises(DataError, match="has line 1 that is not a JSON object"):
        read_table(not_rows, limits=ReadLimits())


def test_a_json_array_is_bounded_like_json_lines_and_read_as_pandas_reads_it(tmp_path):
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([{"text": f"review {row}", "id": row} for row in range(6)]))
    assert read_table(rows, limits=ReadLimits()).equals(read_table(rows, limits=NO_LIMITS))
    with pytest.raises(DataError, match="has more than 5 rows"):
        read_table(rows, limits=ReadLimits(max_rows=5))
    columns = tmp_path / "columns.json"  # pandas' other layout: a column of rows per key
    columns.write_text('{"text": {"0": "a", "1": "b"}}')
    with pytest.raises(DataError, match="is not a JSON array of flat rows: give an array of rows like"):
        read_table(columns, limits=ReadLimits())
    assert read_table(columns, limits=NO_LIMITS)["text"].tolist() == ["a", "b"]  # trusted: as pandas reads it


def test_parquet_sizes_come_from_the_pages_themselves(tmp_path):
    honest = tmp_path / "honest.parquet"
    pq.write_table(pa.table({"text": [f"review {row} " * 50 for row in range(3000)], "id": range(3000)}), honest)
    metadata = pq.ParquetFile(honest).metadata
    pages = shapes.parquet_pages(honest, metadata, MAX_PARQUET_PAGES)
    declared = sum(metadata.row_group(0).column(index).total_uncompressed_size for index in range(2))
    assert pages.values == 3000 and 0.9 * declared < pages.uncompressed <= declared  # the footer counts headers too
    prefix_coded = tmp_path / "prefix_coded.parquet"  # each value stored as a change to the one before
    table = pa.table({"text": ["a" * 1000 + str(row) for row in range(100)]})
    pq.write_table(table, prefix_coded, use_dictionary=False, column_encoding={"text": "DELTA_BYTE_ARRAY"})
    with pytest.raises(DataError, match="has pages encoded as DELTA_BYTE_ARRAY"):
        read_table(prefix_coded, limits=ReadLimits())
    assert read_table(prefix_coded, limits=NO_LIMITS)["text"].tolist() == table["text"].to_pylist()
