"""Durable writes (issue 15): one atomic writer for every file a user keeps, and adapter publishing that
survives a kill or a power cut between its renames and never loses the freshly trained adapter."""

from __future__ import annotations

import os
import re
import time

import pytest

from tests.conftest import PROJECT_ROOT
from training import storage
from training.model import ModelLoadError, check_adapter_folder
from training.train import publish_adapter


def adapter_folder(path, marker: str):
    path.mkdir(parents=True)
    for name in ("adapter_model.safetensors", "adapter_config.json", "sentiment_config.json"):
        (path / name).write_text(marker)
    return path


def test_an_atomic_write_is_all_or_nothing_and_fsynced(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    storage.write_json(target, {"accuracy": 0.9})
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda descriptor: synced.append(descriptor) or real_fsync(descriptor))
    with pytest.raises(RuntimeError), storage.atomic_writer(target) as file:
        file.write('{"accur')  # a crash half-way through
        raise RuntimeError("killed")
    assert target.read_text() == '{\n  "accuracy": 0.9\n}\n'  # the old file, whole
    assert [path.name for path in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left behind
    storage.write_json(target, {"accuracy": 0.95})
    assert '"accuracy": 0.95' in target.read_text()
    assert len(synced) >= (2 if os.name == "posix" else 1)  # the file, then its folder


def test_folder_fsync_is_skipped_where_the_platform_has_none(tmp_path, monkeypatch):
    opened = []
    monkeypatch.setattr(os, "name", "nt")
    monkeypatch.setattr(os, "open", lambda *args, **kwargs: opened.append(args) or 0)
    storage.fsync_folder(tmp_path)
    assert not opened


def test_publishing_replaces_the_adapter_and_leaves_nothing_behind(tmp_path):
    destination = adapter_folder(tmp_path / "adapter", "old")
    staged = adapter_folder(tmp_path / ".adapter.new-1", "new")
    publish_adapter(staged, destination)
    assert (destination / "adapter_config.json").read_text() == "new"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["adapter"]


def test_an_aside_name_left_by_a_repeated_pid_cannot_make_the_publish_fail(tmp_path):
    destination = adapter_folder(tmp_path / "adapter", "old")
    leftover = adapter_folder(tmp_path / f".adapter.old-{os.getpid()}", "from another container")
    staged = adapter_folder(tmp_path / ".adapter.new-1", "new")
    publish_adapter(staged, destination)
    assert (destination / "adapter_config.json").read_text() == "new"
    assert (leftover / "adapter_config.json").read_text() == "from another container"  # untouched


def test_a_failed_publish_keeps_the_staged_adapter_and_the_old_one(tmp_path, monkeypatch):
    destination = adapter_folder(tmp_path / "adapter", "old")
    staged = adapter_folder(tmp_path / ".adapter.new-1", "new")
    real_replace, calls = os.replace, []

    def second_rename_fails(source, target):
        calls.append(source)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", second_rename_fails)
    with pytest.raises(storage.PublishError, match=re.escape(str(staged))):
        publish_adapter(staged, destination)
    monkeypatch.undo()
    assert (staged / "adapter_config.json").read_text() == "new"  # never deleted
    assert (destination / "adapter_config.json").read_text() == "old"  # put back


def test_a_power_cut_between_the_renames_points_to_the_newest_previous_adapter(tmp_path, monkeypatch):
    destination = tmp_path / "adapter"
    older = adapter_folder(tmp_path / ".adapter.old-zzzz" / "adapter", "older")
    os.utime(older.parent, (time.time() - 3600, time.time() - 3600))
    adapter_folder(destination, "previous")
    staged = adapter_folder(tmp_path / ".adapter.new-1", "new")
    real_replace, calls = os.replace, []

    def power_cut(source, target):
        calls.append(source)
        if len(calls) == 2:
            raise SystemExit("power cut")  # the process is gone: nothing after this runs
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(SystemExit):
        publish_adapter(staged, destination)
    monkeypatch.undo()
    assert not destination.exists() and (staged / "adapter_config.json").read_text() == "new"
    with pytest.raises(ModelLoadError, match="previous adapter is intact at") as error:
        check_adapter_folder(destination)
    restore = re.search(r"mv '([^']+)'", str(error.value)).group(1)
    assert (tmp_path / restore / "adapter_config.json").read_text() == "previous"  # the newest, not .old-zzzz


def test_every_file_written_for_a_user_goes_through_the_atomic_writer():
    direct = re.compile(
        r"(?<!storage)\.write_text\(|(?<!storage)\.write_bytes\(|\.to_csv\(\s*(path|args|output)|savefig\(\s*(path|paths)"
    )
    allowed = {"training/storage.py", "training/failures.py"}  # the writer itself; failure logs
    offenders = [
        f"{path.relative_to(PROJECT_ROOT)}:{number}"
        for package in ("training", "evaluation", "inference")
        for path in (PROJECT_ROOT / package).glob("*.py")
        if str(path.relative_to(PROJECT_ROOT)) not in allowed
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if direct.search(line) and "not a user's file" not in line
    ]
    assert not offenders, offenders
