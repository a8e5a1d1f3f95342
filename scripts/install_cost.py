"""What an optional extra costs to install: seconds and megabytes on top of the base install; one JSON record.

    python scripts/install_cost.py --extra requirements-serve.txt --output docs/records/install_serve.json

Builds a fresh virtual environment in a temporary folder, installs the base (`torch==2.13.0`, the CPU build,
and requirements.txt, pinned by constraints.txt), measures its site-packages, then installs the extra the same
way and measures again: the extra's install time (pip's whole run: resolving, downloading from the configured
index, unpacking) and the size it adds. The base install is not timed.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from training import storage
from training.paths import PROJECT_ROOT

BASE = ["torch==2.13.0", "-r", "requirements.txt"]


def size_mb(folder: Path) -> float:
    total = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink())
    return round(total / 2**20, 1)


def pip_install(python: Path, arguments: list[str]) -> float:
    started = time.perf_counter()
    command = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *arguments]
    subprocess.run([*command, "-c", "constraints.txt"], cwd=PROJECT_ROOT, check=True)
    return round(time.perf_counter() - started, 1)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extra", default="requirements-serve.txt", help="The extra's requirements file.")
    parser.add_argument("--output", type=Path, required=True, help="The JSON record to write.")
    args = parser.parse_args(argv)
    started, load_at_start = datetime.datetime.now(datetime.UTC), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="install_cost_") as work:
        venv = Path(work) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        pip_install(python, BASE)
        site = next((venv / "lib").glob("python*/site-packages"))
        base_mb = size_mb(site)
        extra_s = pip_install(python, ["-r", args.extra])
        with_extra_mb = size_mb(site)
    record = {
        "command": " ".join(["python", "scripts/install_cost.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": started.isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "index": os.environ.get("PIP_INDEX_URL", "pip's configured index"),
        "extra": args.extra,
        "base_site_packages_mb": base_mb,
        "with_extra_site_packages_mb": with_extra_mb,
        "extra_adds_mb": round(with_extra_mb - base_mb, 1),
        "extra_install_s": extra_s,
        "load_average_at_start": [round(value, 2) for value in load_at_start],
        "load_average_at_end": [round(value, 2) for value in os.getloadavg()],
    }
    storage.write_json(args.output, record)
    print(record)
    return record


if __name__ == "__main__":
    main()
