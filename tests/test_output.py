"""Output folders (diffsde._output) and atomic files (diffsde._io), called directly: a folder that
appears while a run works is never replaced unasked; --force replaces only folders diffsde wrote;
a replacement cut short by a kill is finished or rolled back by the next run in that folder; and
the temporaries a killed process leaves are deleted by the next run, never those of a live one.

A killed process is simulated by the files it leaves, named with the PID of a process that has
exited and dated before this test process started (os.utime), exactly as a SIGKILL leaves them.
"""

import json
import os
import subprocess
import sys

import pytest

from diffsde import _io
from diffsde._io import rename_noreplace, stale_temporaries, write_text_atomic
from diffsde._output import MANIFEST, OutputFolder, OutputFolderError, read_manifest, tidy


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The PID of a process that has exited (and was waited for: not a zombie)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def make_stale(path, pid: int, kind: str) -> None:
    """Make ``path`` look like a temporary a killed process left: dated before this process started."""
    if kind == "tmp":
        path.write_text("half a checkpoint")
    else:
        path.mkdir()
    os.utime(path, (_io.STARTED - 60, _io.STARTED - 60))


def write_ours(folder, files: dict) -> None:
    """A folder as OutputFolder writes it."""
    with OutputFolder(folder) as work:
        for name, text in files.items():
            (work / name).write_text(text)


def leftovers(parent) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# -- the final rename (issue 11, item 2) -------------------------------------------------

def test_a_folder_that_appears_meanwhile_is_never_replaced_without_force(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(OutputFolderError, match="appeared while this run was working"):
        with OutputFolder(target) as work:
            (work / "ours.txt").write_text("this run")
            target.mkdir()  # another run (or the user) writes the same --out meanwhile
            (target / "theirs.txt").write_text("the other run")
    assert sorted(p.name for p in target.iterdir()) == ["theirs.txt"]
    assert leftovers(tmp_path) == []


def test_with_force_a_folder_that_appears_meanwhile_is_replaced_only_if_diffsde_wrote_it(tmp_path):
    target = tmp_path / "out"
    with OutputFolder(target, force=True) as work:
        (work / "ours.txt").write_text("this run")
        write_ours(target, {"theirs.txt": "the other diffsde run"})
    assert sorted(p.name for p in target.iterdir()) == [MANIFEST, "ours.txt"]

    other = tmp_path / "other"
    with pytest.raises(OutputFolderError, match="not written by diffsde"):
        with OutputFolder(other, force=True) as work:
            (work / "ours.txt").write_text("this run")
            other.mkdir()
            (other / "thesis.txt").write_text("the user's")
    assert sorted(p.name for p in other.iterdir()) == ["thesis.txt"]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("renameat2", ["libc", "fallback"])
def test_rename_noreplace_refuses_any_existing_name(renameat2, tmp_path, monkeypatch):
    if renameat2 == "fallback":  # other systems, or filesystems without RENAME_NOREPLACE
        monkeypatch.setattr(_io, "_renameat2", None)
    elif _io._renameat2 is None:
        pytest.skip("no renameat2 here")
    source = tmp_path / "source"
    source.mkdir()
    (tmp_path / "empty").mkdir()  # POSIX rename alone would replace an empty folder
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "file").write_text("x")
    for name in ("empty", "full", "file"):
        with pytest.raises(FileExistsError):
            rename_noreplace(source, tmp_path / name)
    assert source.is_dir() and (tmp_path / "full" / "x").is_file()
    rename_noreplace(source, tmp_path / "new")
    assert (tmp_path / "new").is_dir() and not source.exists()


# -- what --force may replace (item 1) ---------------------------------------------------

def test_the_manifest_is_written_last_and_lists_every_file(tmp_path):
    with OutputFolder(tmp_path / "out", record={"toy": "ring"}) as work:
        (work / "a.txt").write_text("abc")
        (work / "sub").mkdir()
        (work / "sub" / "b.txt").write_text("de")
    manifest = read_manifest(tmp_path / "out")
    assert manifest["files"] == {"a.txt": 3, "sub/b.txt": 2} and manifest["toy"] == "ring"


@pytest.mark.parametrize("change", ["added file", "resized file", "empty folder", "link", "no manifest"])
def test_force_refuses_a_diffsde_folder_the_user_changed(change, tmp_path):
    target = tmp_path / "out"
    write_ours(target, {"a.txt": "abc"})
    if change == "added file":
        (target / "notes.txt").write_text("mine")
    elif change == "resized file":
        (target / "a.txt").write_text("abc and my edits")
    elif change == "empty folder":
        (target / "drafts").mkdir()
    elif change == "link":
        (target / "data").symlink_to(tmp_path)
    else:
        (target / MANIFEST).unlink()
    before = sorted(p.name for p in target.iterdir())
    with pytest.raises(OutputFolderError, match="out"):
        OutputFolder(target, force=True)
    assert sorted(p.name for p in target.iterdir()) == before


def test_the_filesystem_root_and_a_file_are_refused(tmp_path):
    with pytest.raises(OutputFolderError, match="root"):
        OutputFolder("/", force=True)
    (tmp_path / "file").write_text("data")
    with pytest.raises(OutputFolderError, match="not a folder"):
        OutputFolder(tmp_path / "file", force=True)
    assert (tmp_path / "file").read_text() == "data"


# -- a replacement cut short (item 3) and stale temporaries (item 4) -----------------------

def swap_killed_between_the_renames(parent, pid: int, new_complete: bool) -> None:
    """What a run with --force leaves when killed after renaming the old folder aside and before
    renaming the new one in: no ``out`` at all, ``.out.PID.X.old`` and ``.out.PID.X.partial``."""
    write_ours(parent / "out", {"old.txt": "the previous run"})
    old, partial = parent / f".out.{pid}.abcd1234.old", parent / f".out.{pid}.abcd1234.partial"
    os.rename(parent / "out", old)
    write_ours(parent / "new", {"new.txt": "the killed run"})
    os.rename(parent / "new", partial)
    if not new_complete:
        (partial / MANIFEST).unlink()  # killed before its last file: the old folder comes back
    for path in (old, partial):
        os.utime(path, (_io.STARTED - 60, _io.STARTED - 60))


@pytest.mark.parametrize("new_complete", [True, False])
def test_the_next_run_finishes_or_rolls_back_a_replacement_cut_short(new_complete, tmp_path, dead_pid):
    swap_killed_between_the_renames(tmp_path, dead_pid, new_complete)
    assert not (tmp_path / "out").exists()  # before the fix this stayed so: no output folder at all
    OutputFolder(tmp_path / "another")  # any run in that folder
    expected = "new.txt" if new_complete else "old.txt"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MANIFEST, expected]
    assert leftovers(tmp_path) == []


def test_stale_temporaries_are_deleted_and_those_of_live_processes_kept(tmp_path, dead_pid):
    write_ours(tmp_path / "out", {"x.txt": "x"})  # a run that finished; then a killed one left these:
    for name, kind in (("out", "partial"), ("out", "old"), ("checkpoint.pt", "tmp")):
        make_stale(tmp_path / f".{name}.{dead_pid}.abcd1234.{kind}", dead_pid, kind)
    live = [f".out.{os.getpid()}.abcd1234.partial",  # this process's own
            f".out.{os.getppid()}.abcd1234.partial",  # a live process's
            ".notes.partial", ".out.12.tmp"]  # not our naming
    for name in live:
        make_stale(tmp_path / name, 0, "partial")
    tidy(tmp_path)
    assert leftovers(tmp_path) == sorted(live)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MANIFEST, "x.txt"]


def test_a_new_temporary_names_its_process(tmp_path):
    with OutputFolder(tmp_path / "out") as work:
        assert work.name.startswith(f".out.{os.getpid()}.") and work.name.endswith(".partial")
        assert [t.pid for t in stale_temporaries(tmp_path)] == []  # its own: never stale
    assert leftovers(tmp_path) == []


def test_write_atomic_deletes_what_a_killed_write_of_the_same_file_left(tmp_path, dead_pid):
    # Issue 11, item 4: 7 `.checkpoint.pt.XXXX.tmp` files after 15 kills.
    stale = tmp_path / f".checkpoint.pt.{dead_pid}.abcd1234.tmp"
    other = tmp_path / f".other.pt.{dead_pid}.abcd1234.tmp"  # another file's: left to its own next write
    mine = tmp_path / f".checkpoint.pt.{os.getpid()}.abcd1234.tmp"  # a write in progress in this process
    for path in (stale, other, mine):
        make_stale(path, dead_pid, "tmp")
    write_text_atomic(tmp_path / "checkpoint.pt", "new")
    assert not stale.exists() and other.exists() and mine.exists()
    assert (tmp_path / "checkpoint.pt").read_text() == "new"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "record.json"
    write_text_atomic(path, json.dumps({"a": 1}))

    def interrupted(handle):
        handle.write(b"{")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _io.write_atomic(path, interrupted)
    assert json.loads(path.read_text()) == {"a": 1} and leftovers(tmp_path) == []
