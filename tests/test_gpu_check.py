"""scripts/gpu_check.py --dry-run: the GPU check's every stage at tiny sizes on the CPU, so the one prepared
call a lent GPU gets keeps working between the sessions that have one."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile

import pytest

from training.paths import PROJECT_ROOT


@pytest.mark.slow
def test_dry_run_writes_the_report_with_every_stage(imdb_dir, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "scripts/gpu_check.py", "--dry-run", "--out", str(out), "--scratch", str(tmp_path / "scratch"),
         "--data", str(imdb_dir)],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["dry_run"] is True
    assert set(report["stages"]) == {"benchmark", "pytest", "quality"}
    assert all(stage["returncode"] == 0 for name, stage in report["stages"].items() if name != "quality")

    benchmark = report["stages"]["benchmark"]
    assert {target["part"] for target in benchmark["targets"]} == {"gpu-train", "gpu-inference"}
    assert "error" not in benchmark["parts"]["gpu-train"] and "error" not in benchmark["parts"]["gpu-inference"]

    # Without CUDA every GPU test skips, by name, and none fails.
    counts = report["stages"]["pytest"]["counts"]
    assert counts["failures"] == counts["errors"] == 0 and counts["skipped"] == counts["tests"] == 5

    quality = report["stages"]["quality"]
    assert set(quality["candidates"]) == {"r32_lr3e-4_6ep", "r16_lr4e-4_6ep", "r32_lr3e-4_4ep"}
    assert all(candidate["status"] == "finished" for candidate in quality["candidates"].values())
    assert quality["best"] in quality["candidates"]
    assert quality["beats_shipped"] is False  # two tiny steps cannot beat the shipped adapter
    with tarfile.open(out / "best_adapter.tar") as archive:
        assert f"{quality['best']}/adapter_model.safetensors" in archive.getnames()
    # What comes back from a lent machine: five files at most, each named here.
    assert {path.name for path in out.iterdir()} == {
        "report.json", "benchmark.json", "pytest.xml", "logs.tar", "best_adapter.tar"
    }  # fmt: skip
