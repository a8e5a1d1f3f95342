"""Audit this environment's pinned dependencies for known vulnerabilities, and say plainly what was checked.

    python scripts/audit_dependencies.py            # .ci/run runs it after installing
    python scripts/audit_dependencies.py --offline  # only the advisory snapshot, no network

The pins are `pip freeze --all` of the running environment (what CI installed), kept in
results/requirements-frozen.txt. Two checks, each counting the packages it could really check:

1. Live: pip-audit checks exactly those versions, without resolving anything (--no-deps --disable-pip),
   against PyPI's vulnerability records. Where PyPI's JSON API cannot be reached (no internet; a package
   mirror without the per-release records answers "not found" for each) it checks nothing.
2. Offline: the same versions against a snapshot of the PyPA advisory database (scripts/advisories/, with its
   source, commit and date), trimmed to the packages it was cut for. It knows nothing published after that
   date, and the output says how old it is. A package it was not cut for is not checked by it: rebuild it
   (--build-snapshot, see docs/reliability.md) after adding a dependency.

The summary and pip-audit's own JSON go to results/dependency_audit.json and results/pip_audit_raw.json.

Exit status: 1 when either check finds a known vulnerability; 3 (UNVERIFIED) when some pinned package was
checked by neither the live service nor a snapshot at most --max-snapshot-age-days old (printed as
"UNVERIFIED: N of M packages checked"): nothing found then does not mean nothing is there; 0 when every pinned
package was checked against current advisories and nothing was found.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from training.paths import PROJECT_ROOT, RESULTS_DIR

SNAPSHOT = Path(__file__).resolve().parent / "advisories" / "pypa-advisory-database.json"
SNAPSHOT_SOURCE = "https://github.com/pypa/advisory-database"
VULNERABLE_EXIT = 1
UNVERIFIED_EXIT = 3  # some pinned package could not be checked against current advisories: not a pass
MAX_SNAPSHOT_AGE_DAYS = 365  # an older snapshot still fails a known vulnerability, but verifies nothing


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=RESULTS_DIR,
        help="Where the frozen pins and the JSON report go (default: results/).",
    )
    parser.add_argument("--timeout", type=float, default=600, help="Give up on pip-audit after this many seconds.")
    parser.add_argument("--offline", action="store_true", help="Skip the live check (pip-audit): the snapshot only.")
    parser.add_argument("--snapshot", type=Path, default=SNAPSHOT, help="The advisory snapshot (default: %(default)s).")
    parser.add_argument(
        "--max-snapshot-age-days",
        type=int,
        default=MAX_SNAPSHOT_AGE_DAYS,
        help="A snapshot older than this still reports what it knows, but counts as no check (default: %(default)s).",
    )
    parser.add_argument(
        "--build-snapshot",
        type=Path,
        metavar="ADVISORY_DB",
        help="Instead of auditing, rewrite --snapshot from a clone of the PyPA advisory database (a git folder, bare "
        "or not), for the packages pinned in constraints.txt and installed here.",
    )
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- the pins


def read_pins(frozen: str) -> dict[str, str]:
    """{canonical name: version} from `pip freeze` output (editable and URL installs left out)."""
    pins = {}
    for line in frozen.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-") or " @ " in line:
            continue
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def freeze() -> str:
    return subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


# ----------------------------------------------------------------------------- the live check (pip-audit)


def summarize(audit: dict) -> dict:
    """Counts from pip-audit's JSON: packages checked, skipped (and why), and every vulnerability found."""
    dependencies = audit.get("dependencies", [])
    skipped = [d for d in dependencies if "skip_reason" in d]
    found = [
        {
            "package": canonicalize_name(d["name"]),
            "version": d["version"],
            "id": v["id"],
            "aliases": v.get("aliases", []),
            "fix_versions": v.get("fix_versions", []),
            "source": "PyPI (live)",
        }
        for d in dependencies
        for v in d.get("vulns", [])
    ]
    return {
        "pinned": len(dependencies),
        "checked": sorted(canonicalize_name(d["name"]) for d in dependencies if "skip_reason" not in d),
        "skipped": len(skipped),
        "skipped_examples": [d["skip_reason"] for d in skipped[:3]],
        "vulnerabilities": found,
    }


def live_audit(pins_file: Path, raw: Path, timeout: float) -> dict:
    """pip-audit on the frozen pins; {"checked": [], "error": why} when it could not run or answer."""
    raw.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip_audit",
        "-r",
        str(pins_file),
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
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        problem = None if raw.exists() else (result.stderr.strip().splitlines() or ["no output"])[-1]
    except subprocess.TimeoutExpired:
        problem = f"no answer within {timeout:.0f} s"
    except FileNotFoundError:
        problem = "pip-audit is not installed (pip install -r requirements-dev.txt)"
    if problem is not None:
        return {"checked": [], "error": problem, "vulnerabilities": []}
    summary = summarize(json.loads(raw.read_text(encoding="utf-8")))
    if not summary["checked"] and summary["skipped_examples"]:
        summary["error"] = f"the service knows none of the pinned versions ({summary['skipped_examples'][0]})"
    return summary


# ----------------------------------------------------------------------------- the offline check (snapshot)


def load_snapshot(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def in_range(version: Version, events: list[list[str]]) -> bool:
    """Whether `version` falls in an OSV ECOSYSTEM range: its events ([kind, version], kind introduced, fixed
    or last_affected) sorted by version, the last one at or below `version` decides."""
    affected = False
    for kind, boundary in sorted(events, key=lambda event: Version(event[1])):
        boundary = Version(boundary)
        if kind == "introduced" and version >= boundary:
            affected = True
        elif (kind == "fixed" and version >= boundary) or (kind == "last_affected" and version > boundary):
            affected = False
    return affected


def affects(advisory: dict, version: str) -> bool:
    """OSV semantics: the version is listed, or inside one of the ranges. A range the check cannot read (a
    version that is not PEP 440) counts as affecting: it is reported, never silently passed."""
    if version in advisory.get("versions", []):
        return True
    try:
        parsed = Version(version)
    except InvalidVersion:
        return True
    for events in advisory.get("ranges", []):
        try:
            if in_range(parsed, events):
                return True
        except InvalidVersion:
            return True
    return False


def snapshot_audit(pins: dict[str, str], snapshot: dict | None) -> dict:
    if snapshot is None:
        return {"checked": [], "error": "no advisory snapshot", "vulnerabilities": []}
    covered = set(snapshot["packages"])
    advisories = snapshot["advisories"]
    found = [
        {
            "package": name,
            "version": version,
            "id": advisory["id"],
            "aliases": advisory.get("aliases", []),
            "fix_versions": advisory.get("fixed", []),
            "source": f"PyPA advisory database, {snapshot['date']}",
        }
        for name, version in pins.items()
        for advisory in advisories.get(name, [])
        if affects(advisory, version)
    ]
    return {
        "checked": sorted(name for name in pins if name in covered),
        "date": snapshot["date"],
        "commit": snapshot["commit"],
        "vulnerabilities": found,
    }


def build_snapshot(database: Path, names: set[str], output: Path) -> dict:
    """The advisories for `names` from a git clone of the PyPA advisory database, trimmed to what the check
    reads: id, aliases, ECOSYSTEM ranges, fixed versions, and the listed versions where an advisory has no
    ECOSYSTEM range (elsewhere the list only enumerates the releases in its ranges). Withdrawn ones are left out."""
    import yaml  # only here: building a snapshot is a maintainer's step, not CI's

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(database), *args], capture_output=True, text=True, check=True).stdout

    commit, date = git("log", "-1", "--format=%H %cs", "HEAD").split()
    folders = {canonicalize_name(folder): folder for folder in git("ls-tree", "--name-only", "HEAD:vulns").split()}
    advisories = {}
    for name in sorted(names & set(folders)):
        for file in git("ls-tree", "--name-only", f"HEAD:vulns/{folders[name]}").split():
            document = yaml.safe_load(git("show", f"HEAD:vulns/{folders[name]}/{file}"))
            if document.get("withdrawn"):
                continue
            for affected in document.get("affected", []):
                if canonicalize_name(affected["package"]["name"]) != name:
                    continue
                ranges = [
                    [[kind, str(value)] for event in item["events"] for kind, value in event.items()]
                    for item in affected.get("ranges", [])
                    if item["type"] == "ECOSYSTEM"
                ]
                entry = {"id": document["id"], "aliases": document.get("aliases", []), "ranges": ranges}
                if affected.get("versions") and not ranges:  # the list enumerates the ranges' releases: kept alone
                    entry["versions"] = [str(version) for version in affected["versions"]]
                entry["fixed"] = sorted({event[1] for events in ranges for event in events if event[0] == "fixed"})
                advisories.setdefault(name, []).append(entry)
    snapshot = {
        "source": SNAPSHOT_SOURCE,
        "license": "CC-BY-4.0 (the PyPA advisory database); trimmed to the fields this check reads",
        "commit": commit,
        "date": date,
        "built_by": "python scripts/audit_dependencies.py --build-snapshot <clone of the source>",
        "packages": sorted(names),
        "advisories": advisories,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(snapshot_json(snapshot), encoding="utf-8")
    return snapshot


def snapshot_json(snapshot: dict) -> str:
    """JSON with one package name, and one advisory, per line: a rebuilt snapshot diffs line by line."""
    parts = [
        f" {json.dumps(key)}: {json.dumps(value)}"
        for key, value in snapshot.items()
        if key not in ("packages", "advisories")
    ]
    parts.append(' "packages": [\n' + ",\n".join(f"  {json.dumps(name)}" for name in snapshot["packages"]) + "\n ]")
    packages = [
        f"  {json.dumps(name)}: [\n" + ",\n".join(f"   {json.dumps(entry)}" for entry in entries) + "\n  ]"
        for name, entries in sorted(snapshot["advisories"].items())
    ]
    parts.append(' "advisories": {\n' + ",\n".join(packages) + "\n }")
    return "{\n" + ",\n".join(parts) + "\n}\n"


# ----------------------------------------------------------------------------- the verdict


def verdict(
    pins: dict[str, str], live: dict, offline: dict, today: datetime.date, max_age_days: int = MAX_SNAPSHOT_AGE_DAYS
) -> tuple[int, list[str]]:
    """The exit status and the lines to print. A package counts as verified when the live check answered for it,
    or the snapshot covers it and is at most `max_age_days` old; any known vulnerability fails either way."""
    lines = []
    found = {(item["package"], item["id"]): item for item in live["vulnerabilities"] + offline["vulnerabilities"]}
    live_line = f"live (PyPI): {len(live['checked'])} of {len(pins)} checked"
    if live.get("error"):
        live_line += f" ({live['error']})"
    lines.append(f"Dependency audit: {live_line}.")
    verified = set(live["checked"])
    if "date" in offline:
        age = (today - datetime.date.fromisoformat(offline["date"])).days
        fresh = age <= max_age_days
        lines.append(
            f"Dependency audit: offline (PyPA advisory database of {offline['date']}, {age} days old, commit "
            f"{offline['commit'][:12]}): {len(offline['checked'])} of {len(pins)} checked; it knows no advisory "
            f"published after {offline['date']}{'' if fresh else f', and at over {max_age_days} days that is too old to count as verified'}."
        )
        if fresh:
            verified |= set(offline["checked"])
    else:
        lines.append(f"Dependency audit: offline: 0 of {len(pins)} checked ({offline.get('error')}).")
    if found:
        lines.append(f"Dependency audit: {len(found)} known vulnerabilities in {len(pins)} pinned packages:")
        for item in found.values():
            fix = ", ".join(item["fix_versions"]) or "no fixed release yet"
            also = f" ({', '.join(item['aliases'][:3])})" if item["aliases"] else ""
            lines.append(f"  {item['package']} {item['version']}: {item['id']}{also} fixed in {fix} [{item['source']}]")
        return VULNERABLE_EXIT, lines
    unverified = sorted(set(pins) - verified)
    if unverified:
        shown = ", ".join(unverified[:8]) + (", ..." if len(unverified) > 8 else "")
        lines.append(
            f"UNVERIFIED: {len(verified)} of {len(pins)} packages checked against current advisories (not: {shown}). "
            "No known vulnerability was found, which does not mean there is none: rerun where pypi.org's release "
            "records are reachable, or rebuild the snapshot (docs/reliability.md)."
        )
        return UNVERIFIED_EXIT, lines
    lines.append(f"Dependency audit: no known vulnerabilities in the {len(pins)} pinned packages.")
    return 0, lines


def main(args: argparse.Namespace) -> int:
    if args.build_snapshot is not None:
        constraints = (PROJECT_ROOT / "constraints.txt").read_text(encoding="utf-8")
        names = set(read_pins(constraints)) | set(read_pins(freeze()))
        snapshot = build_snapshot(args.build_snapshot, names, args.snapshot)
        count = sum(len(entries) for entries in snapshot["advisories"].values())
        print(
            f"{args.snapshot}: {count} advisories for {len(names)} packages, {snapshot['date']} ({snapshot['commit']})"
        )
        return 0
    args.output_dir.mkdir(parents=True, exist_ok=True)
    frozen = freeze()
    pins_file = args.output_dir / "requirements-frozen.txt"
    pins_file.write_text(frozen, encoding="utf-8")
    pins = read_pins(frozen)
    if args.offline:
        live = {"checked": [], "error": "skipped (--offline)", "vulnerabilities": []}
    else:
        live = live_audit(pins_file, args.output_dir / "pip_audit_raw.json", args.timeout)
    offline = snapshot_audit(pins, load_snapshot(args.snapshot))
    status, lines = verdict(pins, live, offline, datetime.date.today(), args.max_snapshot_age_days)
    summary = {"pinned": len(pins), "status": status, "live": live, "offline": offline, "report": lines}
    (args.output_dir / "dependency_audit.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return status


if __name__ == "__main__":
    sys.exit(main(parse_args()))
