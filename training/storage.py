"""Durable writes: the one way this project writes a file a user keeps, and publishes an adapter folder.

Every file is written to a temporary file in the same folder, flushed to disk (fsync), renamed over the
destination (os.replace, atomic on POSIX and Windows), and the folder itself is fsynced where the
platform allows it, so the rename survives a power cut. A reader sees the old file or the new one, never
half of one.

An adapter folder is published by `publish_folder`: the staged folder is fsynced file by file, the old
adapter is moved aside into a unique folder from tempfile.mkdtemp (no name can collide, even when PIDs
repeat in containers), the staged folder is renamed into place and the parent fsynced, and only then is
the old adapter deleted. If anything fails, the staged adapter is never deleted: the error says where it
is. A power cut between the two renames leaves the old adapter whole in `.<name>.old-*/<name>`, and
loading the missing folder names the newest such copy and the command that restores it.

POSIX-only calls (fsync of a folder) are skipped where they do not exist or are refused (Windows).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

ASIDE_MARK = ".old-"  # the old adapter goes to .<name>.old-XXXX/<name> while a new one is swapped in
STAGED_MARK = ".new-"  # a new adapter is written in .<name>.new-XXXX before it is published


class PublishError(OSError):
    """Publishing an adapter failed; the staged copy is kept and the message says where."""


def fsync_folder(folder: str | Path) -> None:
    """Make a rename or a new file in `folder` durable. A no-op where folders cannot be opened (Windows)."""
    if os.name != "posix":
        return
    try:
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some file systems refuse fsync on a folder; the rename still happened
            os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[io.IOBase]:
    """A file object that becomes `path` only when the block ends without an error.

    Text mode ("w") or binary ("wb"). On an error the temporary file is removed and `path` is untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_writer writes whole files: mode 'w' or 'wb', not '{mode}'")
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, mode, **({"encoding": encoding, "newline": ""} if mode == "w" else {})) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    fsync_folder(path.parent)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_writer(path, "wb") as file:
        file.write(data)


def write_text(path: str | Path, text: str) -> None:
    with atomic_writer(path) as file:
        file.write(text)


def write_json(path: str | Path, data) -> None:
    """`data` as indented JSON with a final newline, written atomically."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def fsync_tree(folder: str | Path) -> None:
    """fsync every file under `folder`, then each folder: for files written by other libraries
    (save_pretrained), before the folder is published."""
    folder = Path(folder)
    for root, _, files in os.walk(folder, topdown=False):
        for name in files:
            path = os.path.join(root, name)
            with contextlib.suppress(OSError), open(path, "rb") as file:
                os.fsync(file.fileno())
        fsync_folder(root)


def publish_folder(staged: str | Path, destination: str | Path) -> None:
    """Swap the complete folder `staged` into `destination`, safely against kills and power cuts.

    The previous `destination` is deleted only after the new one is in place and the rename is on disk.
    On failure the staged folder stays where it is (PublishError names it) and the previous one is put back.
    """
    staged, destination = Path(staged), Path(destination)
    parent = destination.parent
    parent.mkdir(parents=True, exist_ok=True)
    fsync_tree(staged)
    fsync_folder(parent)
    aside_holder = None
    try:
        if destination.exists():
            aside_holder = Path(tempfile.mkdtemp(prefix=f".{destination.name}{ASIDE_MARK}", dir=parent))
            os.replace(destination, aside_holder / destination.name)
            fsync_folder(aside_holder)
            fsync_folder(parent)
        os.replace(staged, destination)
        fsync_folder(parent)
    except OSError as error:
        if aside_holder is not None and not destination.exists() and (aside_holder / destination.name).exists():
            with contextlib.suppress(OSError):
                os.replace(aside_holder / destination.name, destination)
                fsync_folder(parent)
                shutil.rmtree(aside_holder, ignore_errors=True)
        raise PublishError(
            f"Could not publish the new adapter to {destination} ({error}). It is complete and kept at {staged}; "
            f"move it into place by hand: mv '{staged}' '{destination}'"
        ) from error
    if aside_holder is not None:
        shutil.rmtree(aside_holder, ignore_errors=True)
        fsync_folder(parent)


def interrupted_publishes(destination: str | Path) -> list[Path]:
    """Previous adapters left aside by an interrupted publish of `destination`, newest first.

    Either `.<name>.old-XXXX/<name>` (publish_folder) or an older layout, `.<name>.old-<pid>` itself."""
    destination = Path(destination)
    if not destination.name:
        return []
    found = []
    for holder in destination.parent.glob(f".{destination.name}{ASIDE_MARK}*"):
        inner = holder / destination.name
        candidate = inner if inner.is_dir() else holder
        if candidate.is_dir() and any(candidate.iterdir()):
            found.append((holder.stat().st_mtime, candidate))  # the holder was made when the publish began
    return [candidate for _, candidate in sorted(found, key=lambda item: item[0], reverse=True)]
