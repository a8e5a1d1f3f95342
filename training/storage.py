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

Published files and folders get the modes a plain `open()` or `mkdir()` would give them under the process
umask (0o666 & ~umask, 0o777 & ~umask): tempfile makes its files 0600 and its folders 0700 and os.replace keeps
them, so without this an app running as another account could not read the adapter the trainer shipped.

POSIX-only calls (fsync of a folder, the modes) are skipped where they do not exist or are refused (Windows).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

ASIDE_MARK = ".old-"  # the old adapter goes to .<name>.old-XXXX/<name> while a new one is swapped in
STAGED_MARK = ".new-"  # a new adapter is written in .<name>.new-XXXX before it is published


_UMASK_LOCK = threading.Lock()


class PublishError(OSError):
    """Publishing an adapter failed; the staged copy is kept and the message says where."""


def current_umask() -> int:
    """The process umask, read without ever loosening it.

    Linux states it in /proc/self/status. Elsewhere os.umask is the only way to read it, and it sets one at the
    same time: it is set to 0o077 for that instant (a file another thread creates meanwhile is, if anything,
    more private, never world-writable) and put back at once."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    with _UMASK_LOCK:
        previous = os.umask(0o077)
        os.umask(previous)
    return previous


def published_mode(is_folder: bool, executable: bool = False) -> int:
    """What open()/mkdir() would have made under the process umask: 0o666 (0o777 for folders and executables)
    less the umask."""
    return (0o777 if is_folder or executable else 0o666) & ~current_umask()


def apply_umask_modes(folder: str | Path) -> None:
    """Give `folder`, everything under it, the modes of published_mode (tempfile's 0600/0700 included).
    Symbolic links are left alone (chmod would change what they point to). A no-op outside POSIX."""
    if os.name != "posix":
        return
    folder_mode, file_mode, program_mode = published_mode(True), published_mode(False), published_mode(False, True)
    os.chmod(folder, folder_mode)
    for root, folders, files in os.walk(folder):
        for name in folders:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, folder_mode)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, program_mode if os.stat(path).st_mode & 0o111 else file_mode)


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
    The file gets the mode a new file gets from open() under the process umask (tempfile's is 0600).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_writer writes whole files: mode 'w' or 'wb', not '{mode}'")
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, mode, **({"encoding": encoding, "newline": ""} if mode == "w" else {})) as file:
            yield file
            file.flush()
            if os.name == "posix":
                os.fchmod(file.fileno(), published_mode(False))
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
    The folder and everything in it get the umask's modes first (a staged folder from mkdtemp is 0700).
    On failure the staged folder stays where it is (PublishError names it) and the previous one is put back.
    """
    staged, destination = Path(staged), Path(destination)
    parent = destination.parent
    parent.mkdir(parents=True, exist_ok=True)
    aside_holder = None
    try:
        apply_umask_modes(staged)  # before the fsync, so the modes are on disk with the files
        fsync_tree(staged)
        fsync_folder(parent)
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
