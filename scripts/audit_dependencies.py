"""Audit this environment's pinned dependencies for known vulnerabilities, and say plainly what was checked.

    python scripts/audit_dependencies.py            # .ci/run runs it after installing

The pins are `pip freeze` of the running environment (what CI installed), kept in
results/requirements-frozen.txt. pip-audit checks exactly those versions, without resolving anything
(--no-deps --disable-pip), against PyPI's vulnerability records. The summary and pip-audit's own
JSON go to results/dependency_audit.json.

Exit status: 1 when a known vulnerability is found; 0 otherwise. When the vulnerability service
cannot be reached, or knows none of the pinned versions (a package mirror without PyPI's per-release
records answers "not found" for each), nothing was checked: that is printed as a warning, and the
build does not fail for a network problem.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from training.paths import RESULTS_DIR


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=RESULTS_DIR,
        help="Where the frozen pins and the JSON report go (default: results/).",
    )
    parser.add_argument("--timeout", type=float, default=600, help="Give up on pip-audit after this many seconds.")
    return parser.parse_args(argv)


def summarize(audit: dict) -> dict:
    """Counts from pip-audit's JSON: packages checked, skipped (and why), and every vulnerability found."""
    dependencies = audit.get("dependencies", [])
    skipped = [d for d in dependencies if "skip_reason" in d]
    found = [
        {"package": d["name"], "version": d["version"], "id": v["id"], "fix_versions": v.get("fix_versions", [])}
        for d in dependencies
        for v in d.get("vulns", [])
    ]
    return {
        "pinned": len(dependencies),
        "checked": len(dependencies) - len(skipped),
        "skipped": len(skipped),
        "skipped_examples": [d["skip_reason"] for d in skipped[:3]],
        "vulnerabilities": found,
    }


def main(args: argparse.Namespace) -> int:
    args.output_dir.mkdir(parents=True, exist_ok=True)
    pins = args.output_dir / "requirements-frozen.txt"
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pins.write_text(frozen)
    raw = args.output_dir / "pip_audit_raw.json"
    raw.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip_audit",
        "-r",
        str(pins),
        "--no-deps",
        "--disable-pip",
        "--vulnerability-service",
        "pypi",
        "--progress-spinner",
        "off",
        "--format",
        "json",
        "--output",
        str(raw),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
        problem = None if raw.exists() else (result.stderr.strip().splitlines() or ["no output"])[-1]
    except subprocess.TimeoutExpired:
        problem = f"no answer within {args.timeout:.0f} s"
    except FileNotFoundError:
        problem = "pip-audit is not installed (pip install -r requirements-dev.txt)"

    if problem is not None:
        summary = {"pinned": len(frozen.splitlines()), "checked": 0, "error": problem, "vulnerabilities": []}
    else:
        summary = summarize(json.loads(raw.read_text()))
    (args.output_dir / "dependency_audit.json").write_text(json.dumps(summary, indent=2) + "\n")

    if summary["vulnerabilities"]:
        print(
            f"Dependency audit: {len(summary['vulnerabilities'])} known vulnerabilities in {summary['pinned']} pinned packages:"
        )
        for item in summary["vulnerabilities"]:
            fix = ", ".join(item["fix_versions"]) or "no fixed release yet"
            print(f"  {item['package']} {item['version']}: {item['id']} (fixed in {fix})")
        return 1
    if summary["checked"] == 0:
        reason = summary.get("error") or (
            f"the service knows none of the pinned versions ({summary['skipped_examples'][0] if summary.get('skipped_examples') else ''})"
        )
        print(
            f"WARNING: dependency audit could not check any of the {summary['pinned']} pinned packages: {reason}. "
            f"Nothing found here does not mean nothing is there; rerun where pypi.org's release records are reachable."
        )
        return 0
    note = f"; {summary['skipped']} could not be checked (not on PyPI)" if summary["skipped"] else ""
    print(f"Dependency audit: no known vulnerabilities in the {summary['checked']} pinned packages checked{note}.")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
