"""Output folders and the records written into them: all or nothing, and never a folder we did not write.

* :class:`OutputFolder` writes a whole folder atomically: files go to a temporary folder beside
  the target, which is renamed into place when the block ends without an error (and deleted
  otherwise). It replaces only a folder that diffsde itself wrote, and never one that appeared
  while the run was working unless asked to.
* :func:`write_json` writes a record (tensors, numpy scalars, paths, devices and dtypes allowed)
  atomically (:func:`diffsde._io.write_text_atomic`).
* :func:`save_samples` writes an (n, d) sample tensor as ``.pt``, ``.npy`` or ``.csv``.
* :func:`environment` describes the Python / torch / platform a record was made with.

A folder diffsde wrote holds a manifest, :data:`MANIFEST` (``.diffsde-output.json``), written
last: its format tag and version, the diffsde version, the files with their sizes in bytes and
whatever the caller adds (the command, the toy). A folder is "ours" when its manifest reads back
and every file in it is listed with the size written: a file a user added (or resized by editing)
makes it theirs again.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from . import __version__
from ._io import PathLike, rename_noreplace, stale_temporaries, temporary_prefix, write_text_atomic
from ._process import signals_deferred

__all__ = ["OutputFolder", "OutputFolderError", "MANIFEST", "read_manifest", "run_toy", "tidy", "write_json",
           "save_samples", "environment"]

MANIFEST = ".diffsde-output.json"
MANIFEST_FORMAT = "diffsde-output"
MANIFEST_VERSION = 1


class OutputFolderError(OSError):
    """An output folder cannot be written or replaced; the message says which folder and why."""


class OutputFolder:
    """Write a folder atomically: ``with OutputFolder(target, force) as work:`` gives a temporary
    folder ``.NAME.PID.XXXXXXXX.partial`` beside ``target``; when the block ends without an error
    the manifest is written into it and it is renamed to ``target`` (deleted otherwise).

    The rename never replaces what appeared at ``target`` meanwhile (:func:`diffsde._io.rename_noreplace`).
    An existing ``target`` is refused unless ``force``; with ``force`` it is replaced only if it is
    a folder diffsde wrote (see the module docstring), checked at construction (before any long
    work) and again at the end. The replacement is recoverable at every instant: the old folder is
    renamed aside to ``.NAME.PID.XXXXXXXX.old``, the new one renamed in, then the old one deleted.

    At construction the parent folder is tidied: a replacement that a killed process left half
    done is finished (the new folder was complete: it is renamed in) or rolled back (the old one is
    renamed back), and the temporaries of dead processes are deleted (:func:`diffsde._io.stale_temporaries`).

    Args:
        target: the folder to write.
        force: replace an existing folder written by diffsde.
        parents: create missing parent folders (otherwise the parent must exist).
        record: extra entries for the manifest (JSON-able), e.g. the command and the toy; not
            ``format``, ``version``, ``diffsde`` or ``files``, which the manifest sets itself.

    Raises:
        OutputFolderError: with a one-line message naming the folder: it exists (without ``force``),
            it is not a folder diffsde wrote (with ``force``), it is the filesystem root, its parent
            is missing (without ``parents``) or is not a folder; from the block's end, a folder
            appeared at ``target`` while the block ran.
    """

    def __init__(self, target: PathLike, force: bool = False, parents: bool = False, record: dict | None = None):
        self.target = Path(os.path.abspath(os.path.expanduser(os.fspath(target) or ".")))
        self.force, self.parents, self.record = bool(force), bool(parents), dict(record or {})
        reserved = sorted(set(self.record) & {"format", "version", "diffsde", "files"})
        if reserved:
            raise ValueError(f"record must not set the manifest's own entries, got {reserved}")
        self.work: Path | None = None
        if self.target.parent == self.target:
            raise OutputFolderError(f"output folder {str(self.target)!r} is the filesystem root; choose another --out")
        parent = self.target.parent
        if parent.is_dir():
            tidy(parent)
        elif os.path.lexists(parent):
            raise OutputFolderError(f"the parent of output folder {str(self.target)!r} is not a folder")
        elif not self.parents:
            raise OutputFolderError(f"the parent folder {str(parent)!r} of output folder {str(self.target)!r} "
                                    f"does not exist; create it or pass --parents")
        if os.path.lexists(self.target):
            if not self.force:
                raise OutputFolderError(f"output folder {str(self.target)!r} already exists; pass --force to "
                                        f"replace it or choose another --out")
            self._check_replaceable(self.target)

    def __enter__(self) -> Path:
        if self.parents:
            self.target.parent.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix=temporary_prefix(self.target.name), suffix=".partial",
                                          dir=self.target.parent))
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(self.work, 0o777 & ~mask)  # mkdtemp makes it private; give it a normal folder's mode
        return self.work

    def __exit__(self, kind, error, trace) -> bool:
        with signals_deferred():  # a stop signal now waits until the folder is in place or gone
            try:
                if kind is None:
                    _write_manifest(self.work, self.record)
                    self._install()
            finally:
                if self.work.exists():
                    shutil.rmtree(self.work, ignore_errors=True)
        return False

    def _install(self) -> None:
        """Rename the work folder to the target without ever replacing what appeared there unasked."""
        aside = self.work.with_name(self.work.name[:-len(".partial")] + ".old")
        try:
            for _ in range(3):  # another run may write the target again between our renames
                try:
                    rename_noreplace(self.work, self.target)
                    break
                except FileExistsError:
                    if not self.force:
                        raise OutputFolderError(f"output folder {str(self.target)!r} appeared while this run was "
                                                f"working (another run?); it was left as it is and this run's "
                                                f"results were not written") from None
                    self._check_replaceable(self.target)
                    if aside.exists():
                        _remove_ours(aside)
                    try:
                        rename_noreplace(self.target, aside)
                    except FileNotFoundError:
                        continue
                    if _not_ours(aside):  # swapped for someone else's between the check and the rename
                        raise OutputFolderError(f"output folder {str(self.target)!r} changed while being "
                                                f"replaced; it was left as it is")
            else:
                raise OutputFolderError(f"output folder {str(self.target)!r} kept being written by another run; "
                                        f"this run's results were not written")
        except BaseException:
            if aside.exists() and not os.path.lexists(self.target):
                rename_noreplace(aside, self.target)  # put back what was moved aside
            raise
        if aside.exists():
            _remove_ours(aside)

    def _check_replaceable(self, folder: Path) -> None:
        if folder.is_symlink() or not folder.is_dir():
            raise OutputFolderError(f"--out {str(folder)!r} exists and is not a folder; refusing to replace it")
        reason = _not_ours(folder)
        if reason:
            where = (" (the current folder)" if _same(folder, os.curdir) else
                     " (the home folder)" if _same(folder, os.path.expanduser("~")) else "")
            raise OutputFolderError(f"output folder {str(folder)!r}{where} {reason}; --force replaces only folders "
                                    f"diffsde wrote: choose another --out, or move it away yourself")


def read_manifest(folder: PathLike) -> dict | None:
    """The manifest of a folder diffsde wrote, or None (none, unreadable, or another format)."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT
            or not isinstance(manifest.get("files"), dict)):
        return None
    return manifest


def run_toy(checkpoint: Path) -> dict:
    """The toy a checkpoint's run trained on, from its folder: the manifest diffsde wrote there
    (``diffsde train``, ``diffsde demo``) when it lists this very file, else an older ``train.json``;
    ``{"toy": name, "toy_from": the file that says so}``, or {} when the run does not say.

    Raises:
        ValueError: ``train.json`` is there but not a JSON object.
    """
    manifest = read_manifest(checkpoint.parent)
    if manifest is not None and isinstance(manifest.get("toy"), str) and checkpoint.is_file() and \
            manifest["files"].get(checkpoint.name) == checkpoint.stat().st_size:
        return {"toy": manifest["toy"], "toy_from": str(checkpoint.parent / MANIFEST)}
    sidecar = checkpoint.parent / "train.json"
    if sidecar.is_file():
        try:
            toy = json.loads(sidecar.read_text(encoding="utf-8")).get("toy")
        except (ValueError, AttributeError):
            raise ValueError(f"{str(sidecar)!r} is not a valid train.json; restore it, or remove it and pass "
                             f"--toy") from None
        if isinstance(toy, str):
            return {"toy": toy, "toy_from": str(sidecar)}
    return {}


def tidy(parent: Path) -> None:
    """Finish or roll back replacements that dead processes left half done in ``parent``, and
    delete their other temporaries. Best effort: anything that cannot be read or moved is left."""
    stale = list(stale_temporaries(parent))
    for temp in stale:
        try:
            if temp.kind == "old" and temp.path.exists():
                target, partial = parent / temp.name, temp.path.with_name(temp.path.name[:-len(".old")] + ".partial")
                if not os.path.lexists(target):
                    complete = partial.is_dir() and read_manifest(partial) is not None
                    rename_noreplace(partial if complete else temp.path, target)  # finish, or roll back
                if temp.path.exists() and (read_manifest(temp.path) is not None or not any(temp.path.iterdir())):
                    _remove_ours(temp.path)
        except OSError:
            continue
    for temp in stale:
        try:
            if temp.kind == "partial" and temp.path.is_dir():
                target = parent / temp.name
                if read_manifest(temp.path) is not None and not os.path.lexists(target):
                    rename_noreplace(temp.path, target)  # complete: only the last rename was missing
                else:
                    shutil.rmtree(temp.path)
            elif temp.kind == "tmp":
                temp.path.unlink()
        except OSError:
            continue


def _write_manifest(folder: Path, record: dict) -> None:
    files = {name: size for name, size in _walk(folder) if size >= 0}
    write_json(folder / MANIFEST, {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "diffsde": __version__,
                                   **record, "files": files})


def _not_ours(folder: Path) -> str | None:
    """Why ``folder`` is not a folder diffsde wrote (None if it is): no manifest, or an entry the
    manifest does not account for (unlisted, resized, a link, a folder without listed files)."""
    manifest = read_manifest(folder)
    if manifest is None:
        return f"was not written by diffsde (it has no valid {MANIFEST})"
    files = manifest["files"]
    for name, size in _walk(folder):
        if files.get(name) != size:
            return f"holds {name!r}, which diffsde did not write (added or changed since)"
    return None


def _walk(folder: Path):
    """(relative path, size in bytes) of every entry under ``folder`` but the manifest; size -1 for
    a link, or a folder (with a trailing /) that holds nothing."""
    for root, dirs, names in os.walk(folder):
        base = Path(root).relative_to(folder)
        for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            path, relative = Path(root) / name, (base / name).as_posix()
            if relative != MANIFEST:
                yield relative, -1 if path.is_symlink() else path.stat().st_size
        if root != os.fspath(folder) and not names and not dirs:
            yield base.as_posix() + "/", -1


def _remove_ours(folder: Path) -> None:
    """Delete a folder diffsde wrote, its manifest last: a deletion cut short leaves a folder that
    is still recognised as ours (or an empty one)."""
    for path in folder.iterdir():
        if path.name != MANIFEST:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    (folder / MANIFEST).unlink(missing_ok=True)
    folder.rmdir()


def _same(a: PathLike, b: PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def write_json(path: PathLike, payload: dict) -> Path:
    """Write ``payload`` as indented JSON (NaN written as ``NaN``) atomically; returns the path."""
    return write_text_atomic(path, json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (Path, torch.device, torch.dtype)):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def save_samples(x: torch.Tensor, path: PathLike) -> Path:
    """Write samples ``x`` (n, d) to ``path`` by its suffix: ``.pt`` (torch.save of the CPU tensor),
    ``.npy`` (numpy) or anything else as CSV with a header ``x0,x1,...``. Not atomic by itself:
    write it inside an :class:`OutputFolder`."""
    path = Path(path)
    values = x.detach().cpu()
    if path.suffix == ".pt":
        torch.save(values, path)
    elif path.suffix == ".npy":
        np.save(path, values.numpy())
    else:
        header = ",".join(f"x{j}" for j in range(values.shape[1]))
        np.savetxt(path, values.numpy(), delimiter=",", header=header, comments="")
    return path


def environment() -> dict:
    """Python and torch versions, the platform and torch's CPU thread count, for a record."""
    return {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "torch_threads": torch.get_num_threads()}
