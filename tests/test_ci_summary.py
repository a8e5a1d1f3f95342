"""The CI summary line: counts from the JUnit XML, and a failure for any skip off the allow-list."""

from __future__ import annotations

from tests.ci_summary import summarize

CASES = {
    "passed": '<testcase classname="tests.test_a" name="test_ok" />',
    "failed": '<testcase classname="tests.test_a" name="test_bad"><failure message="no" /></testcase>',
    "root": (
        '<testcase classname="tests.test_reliability" name="test_read_only_output_folder_is_refused_before_loading">'
        '<skipped type="pytest.skip" message="running as root" /></testcase>'
    ),
    "gpu": (
        '<testcase classname="tests.test_gpu" name="test_device_label_names_the_gpu">'
        '<skipped type="pytest.skip" message="needs a CUDA GPU" /></testcase>'
    ),
    "no data": (
        '<testcase classname="tests.test_quality" name="test_shipped[x]">'
        '<skipped type="pytest.skip" message="IMDb parquet files not found" /></testcase>'
    ),
}


def junit(tmp_path, *kinds: str) -> str:
    path = tmp_path / "junit.xml"
    cases = "".join(CASES[kind] for kind in kinds)
    path.write_text(f'<?xml version="1.0"?><testsuites><testsuite name="pytest">{cases}</testsuite></testsuites>')
    return str(path)


def test_allowed_skips_pass_and_are_counted(tmp_path):
    assert summarize(junit(tmp_path, "passed", "passed", "root", "gpu")) == (
        "2 passed, 0 failed, 0 errors, 2 skipped",
        True,
    )


def test_a_skip_off_the_list_fails_the_run_and_is_named(tmp_path):
    line, ok = summarize(junit(tmp_path, "passed", "no data"))
    assert not ok
    assert line.startswith("1 passed, 0 failed, 0 errors, 1 skipped; skips not on the allow-list")
    assert "tests/test_quality.py::test_shipped[x] (IMDb parquet files not found)" in line


def test_a_failure_or_an_empty_run_fails(tmp_path):
    assert summarize(junit(tmp_path, "passed", "failed"))[1] is False
    assert summarize(junit(tmp_path, "gpu"))[1] is False  # nothing ran
