"""Write requirements-lock.txt: every pin in constraints.txt with the sha256 of the file pip installs for it.

    python scripts/lock_hashes.py                       # lock the pins in constraints.txt
    python scripts/lock_hashes.py --from-environment    # first rewrite constraints.txt from this venv's pip freeze

Each pinned release is fetched with `pip download --no-deps --only-binary=:all:` from the indexes pip is
configured with (`pip config list`), that is, the very file `pip install` picks on this platform, and hashed
here (sha256, what `pip hash` prints). Nothing is copied from an index page: a hash in the lock is one computed
from the real file. The lock is therefore for this platform and Python (the header says which); a release
whose file differs elsewhere (torch's CUDA build, a macOS wheel) needs a lock made there.

Install from it (docs/reliability.md#installing-from-the-hash-lock):

    pip install --require-hashes --no-deps -r requirements-lock.txt
    pip install --no-deps --no-build-isolation -e .
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

from training.paths import PROJECT_ROOT

CONSTRAINTS = PROJECT_ROOT / "constraints.txt"
LOCK = PROJECT_ROOT / "requirements-lock.txt"
PROJECT_NAME = "imdb-lora-sentiment"  # installed editable: not a pin
LEFT_OUT = {PROJECT_NAME, "pip"}  # pip is upgraded by itself first; setuptools stays: it builds `-e .`
CHUNK = 1 << 20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--from-environment",
        action="store_true",
        help="Rewrite constraints.txt from this environment's `pip freeze --all` (its header comments kept, the "
        "project and pip left out, torch without its local tag) before locking.",
    )
    parser.add_argument(
        "--constraints", type=Path, default=CONSTRAINTS, help="The pins to lock (default: constraints.txt)."
    )
    parser.add_argument("--output", type=Path, default=LOCK, help="The lock to write (default: requirements-lock.txt).")
    parser.add_argument(
        "--download-dir",
        type=Path,
        default=None,
        help="Keep the downloaded files here (default: a temporary folder, deleted afterwards).",
    )
    return parser.parse_args(argv)


def read_pins(path: Path) -> dict[str, str]:
    """{canonical name: the `name==version` line} for each pin in a constraints file."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            specifiers = list(requirement.specifier)
            if len(specifiers) != 1 or specifiers[0].operator != "==":
                raise ValueError(f"{path.name}: '{line}' is not an exact pin (name==version)")
            pins[canonicalize_name(requirement.name)] = line
    return pins


def header_comments(path: Path) -> list[str]:
    """The comment lines at the top of a constraints file."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    return header


def freeze_pins() -> list[str]:
    """This environment's `pip freeze --all`: the project and pip left out, setuptools kept (the hash-locked
    install builds the project with it), torch's local tag (+cpu, +cu128) dropped so the CPU and CUDA builds of
    one release both satisfy the pin."""
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pins = []
    for line in frozen.splitlines():
        if not line or line.startswith("#") or " @ " in line or line.startswith("-e "):
            continue
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) in LEFT_OUT:
            continue
        if canonicalize_name(requirement.name) == "torch":
            line = line.split("+", 1)[0]
        pins.append(line)
    return pins


def write_constraints(path: Path) -> None:
    text = "\n".join([*header_comments(path), *freeze_pins()]) + "\n"
    path.write_text(text, encoding="utf-8")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def name_and_version(filename: str) -> tuple[str, str]:
    if filename.endswith(".whl"):
        name, version, _, _ = parse_wheel_filename(filename)
    else:
        name, version = parse_sdist_filename(filename)
    return canonicalize_name(name), str(version)


def download(pins: dict[str, str], folder: Path) -> dict[str, Path]:
    """The file pip picks for each pin, fetched into `folder`: {canonical name: path}."""
    requirements = folder / "pins.txt"
    requirements.write_text("\n".join(pins.values()) + "\n", encoding="utf-8")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--progress-bar",
            "off",
            "-q",
            "-d",
            str(folder / "files"),
            "-r",
            str(requirements),
        ],
        check=True,
    )
    files = {}
    for path in sorted((folder / "files").iterdir()):
        name, _ = name_and_version(path.name)
        if name in files:
            raise RuntimeError(f"pip downloaded two files for {name}: {files[name].name}, {path.name}")
        files[name] = path
    missing = sorted(set(pins) - set(files))
    if missing:
        raise RuntimeError(f"pip downloaded nothing for {', '.join(missing)}")
    return files


def lock_text(pins: dict[str, str], files: dict[str, Path]) -> str:
    """The lock: one `name==version --hash=sha256:...` per pin, the version that of the file downloaded."""
    lines = [
        "# Every pin in constraints.txt with the sha256 of the file pip installs for it, computed from that file.",
        "# Written by scripts/lock_hashes.py; do not edit by hand. Install (docs/reliability.md):",
        "#   pip install --require-hashes --no-deps -r requirements-lock.txt",
        "#   pip install --no-deps --no-build-isolation -e .",
        f"# Made {time.strftime('%Y-%m-%d')} for CPython {platform.python_version()} on {sysconfig.get_platform()}:"
        " another platform installs other files and needs its own lock.",
    ]
    for name, pin in pins.items():
        path = files[name]
        file_name, file_version = name_and_version(path.name)
        pinned = Requirement(pin)
        if not pinned.specifier.contains(file_version, prereleases=True):
            raise RuntimeError(f"pip downloaded {path.name} for {pin}")
        lines.append(f"{pinned.name}=={file_version} \\")
        lines.append(f"    --hash=sha256:{sha256(path)}  # {path.name}")
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    if args.from_environment:
        write_constraints(args.constraints)
    pins = read_pins(args.constraints)
    if args.download_dir is not None:
        args.download_dir.mkdir(parents=True, exist_ok=True)
        files = download(pins, args.download_dir)
        args.output.write_text(lock_text(pins, files), encoding="utf-8")
    else:
        with tempfile.TemporaryDirectory(prefix="lock-hashes-") as folder:
            files = download(pins, Path(folder))
            args.output.write_text(lock_text(pins, files), encoding="utf-8")
    print(f"{args.output.name}: {len(pins)} pins, each with the sha256 of the file pip downloaded for it.")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
