"""Durable writes (issue 15): one atomic writer for every file a user keeps, and adapter publishing that
survives a kill or a power cut between its renames and never loses the freshly trained adapter."""

from __future__ import annotations

import ast
import os
import re
import stat
import tempfile
import time
from pathlib import Path

import pytest

from training import failures, storage
from training.errors import ModelLoadError
from training.model import check_adapter_folder
from training.paths import PROJECT_ROOT
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


# ----------------------------------------------------------------------------- modes (issue 20)


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    """Run the test under this process umask, and put the old one back."""
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_the_umask_is_read_without_changing_it(umask):
    assert storage.current_umask() == umask
    assert storage.current_umask() == umask  # still the same: reading it left it in place


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_an_atomic_write_gets_the_mode_open_would_give_not_tempfiles_0600(tmp_path, umask):
    target = tmp_path / "metrics.json"
    storage.write_json(target, {"accuracy": 0.9})
    assert mode(target) == 0o666 & ~umask  # 0644 under 022: another account can read it; 0600 under 077
    with open(tmp_path / "plain.json", "w", encoding="utf-8"):  # what a plain open() makes, for comparison
        pass
    assert mode(target) == mode(tmp_path / "plain.json")


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_a_published_adapter_is_readable_as_the_umask_allows(tmp_path, umask):
    """train.py stages in a mkdtemp folder (0700) and writes some files with mkstemp (0600): once published the
    folder is 0755 and its files 0644 under umask 022, so an app running as another account can load it."""
    destination = adapter_folder(tmp_path / "adapter", "old")
    staged = Path(tempfile.mkdtemp(prefix=f".adapter{storage.STAGED_MARK}", dir=tmp_path))
    handle, private = tempfile.mkstemp(dir=staged)
    os.close(handle)
    os.replace(private, staged / "adapter_model.safetensors")
    (staged / "tokenizer").mkdir(mode=0o700)
    (staged / "tokenizer" / "vocab.txt").write_text("[PAD]\n", encoding="utf-8")
    os.chmod(staged / "tokenizer" / "vocab.txt", 0o600)
    storage.write_json(staged / "adapter_config.json", {})
    assert mode(staged) == 0o700 and mode(staged / "adapter_model.safetensors") == 0o600  # what tempfile made
    publish_adapter(staged, destination)
    assert mode(destination) == mode(destination / "tokenizer") == 0o777 & ~umask
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer/vocab.txt"):
        assert mode(destination / name) == 0o666 & ~umask, name


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_a_link_inside_a_published_adapter_is_not_followed_when_modes_are_set(tmp_path, umask):
    outside = tmp_path / "outside.txt"
    outside.write_text("not the adapter's", encoding="utf-8")
    os.chmod(outside, 0o600)
    staged = adapter_folder(tmp_path / ".adapter.new-1", "new")
    (staged / "link").symlink_to(outside)
    publish_adapter(staged, tmp_path / "adapter")
    assert mode(outside) == 0o600  # chmod would have changed the file the link points to


# ----------------------------------------------------------------------------- failure logs (issue 20)


def test_a_failure_log_never_follows_a_link_planted_at_its_predictable_name(tmp_path, monkeypatch):
    monkeypatch.setenv(failures.LOG_DIR_ENV, str(tmp_path / "logs"))
    monkeypatch.setattr(failures.time, "strftime", lambda pattern, *_: "20260101-000000")
    (tmp_path / "logs").mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    planted = tmp_path / "logs" / f"train-20260101-000000-{os.getpid()}.log"
    planted.symlink_to(victim)  # an attacker's link at the name the next log will have
    dangling = tmp_path / "logs" / f"train-20260101-000000-{os.getpid()}-1.log"
    dangling.symlink_to(tmp_path / "created-through-the-link.txt")
    log = failures.write_traceback("train", RuntimeError("boom"))
    assert victim.read_text(encoding="utf-8") == "precious"  # not overwritten through the link
    assert not (tmp_path / "created-through-the-link.txt").exists()  # nor created through a dangling one
    assert log == tmp_path / "logs" / f"train-20260101-000000-{os.getpid()}-2.log" and not log.is_symlink()
    assert "RuntimeError: boom" in log.read_text(encoding="utf-8")


def test_a_second_failure_in_the_same_second_gets_its_own_log(tmp_path, monkeypatch):
    monkeypatch.setenv(failures.LOG_DIR_ENV, str(tmp_path / "logs"))
    monkeypatch.setattr(failures.time, "strftime", lambda pattern, *_: "20260101-000000")
    first = failures.write_traceback("predict", ValueError("one"))
    second = failures.write_traceback("predict", ValueError("two"))
    assert first != second
    assert "ValueError: one" in first.read_text(encoding="utf-8")
    assert "ValueError: two" in second.read_text(encoding="utf-8")


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="folder owners are POSIX")
def test_the_shared_temporary_log_folder_is_skipped_when_it_is_a_link(tmp_path, monkeypatch):
    """Another account could make the fallback's name in /tmp first, as a link to a folder it reads."""
    monkeypatch.setattr(failures.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(failures, "RESULTS_DIR", tmp_path / "read-only-results")
    monkeypatch.delenv(failures.LOG_DIR_ENV, raising=False)
    monkeypatch.setattr(failures.Path, "mkdir", refuse_results_folder(failures.Path.mkdir, tmp_path))
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    failures.temporary_log_folder().symlink_to(theirs)
    assert failures.write_traceback("train", RuntimeError("boom")) is None
    assert not any(theirs.iterdir())
    failures.temporary_log_folder().unlink()
    log = failures.write_traceback("train", RuntimeError("boom"))
    assert log.parent == failures.temporary_log_folder() and mode(log.parent) == 0o700


def refuse_results_folder(real_mkdir, tmp_path):
    """Path.mkdir that fails for the project's results folder, as on a read-only checkout."""

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path / "read-only-results")):
            raise PermissionError(13, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    return mkdir


def unnamed_text_encodings(source: str) -> list[int]:
    """Lines that read or write text without encoding=: read_text(), write_text(), open() or .open() in a text mode."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or any(keyword.arg == "encoding" for keyword in node.keywords):
            continue
        function = node.func
        if isinstance(function, ast.Attribute) and function.attr in ("read_text", "write_text"):
            lines.append(node.lineno)
        elif (isinstance(function, ast.Name) and function.id == "open") or (
            isinstance(function, ast.Attribute) and function.attr == "open" and not is_os(function.value)
        ):
            modes = [node.args[1]] if len(node.args) > 1 else [k.value for k in node.keywords if k.arg == "mode"]
            if not (modes and isinstance(modes[0], ast.Constant) and "b" in str(modes[0].value)):
                lines.append(node.lineno)
    return lines


def is_os(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "os"  # os.open(): a descriptor, no text


def test_the_storage_and_failure_modules_name_their_text_encodings():
    """read_text()/write_text()/open() in text mode without encoding= depends on the locale (C: ASCII)."""
    assert unnamed_text_encodings("Path('a').read_text()\nopen(p)\nopen(p, 'rb')\nos.open(p, 0)") == [1, 2]
    for name in ("training/storage.py", "training/failures.py"):
        assert not unnamed_text_encodings((PROJECT_ROOT / name).read_text(encoding="utf-8")), name
