"""Output folders and the records written into them, all or nothing.

* :class:`OutputFolder` writes a whole folder atomically: files go to a temporary folder beside
  the target, which is renamed into place when the block ends without an error (and deleted
  otherwise), so an interrupted run never leaves a half-written folder.
* :func:`write_json` writes a record (tensors, numpy scalars, paths, devices and dtypes allowed)
  atomically (:func:`diffsde._io.write_text_atomic`).
* :func:`save_samples` writes an (n, d) sample tensor as ``.pt``, ``.npy`` or ``.csv``.
* :func:`environment` describes the Python / torch / platform a record was made with.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ._io import PathLike, write_text_atomic

__all__ = ["OutputFolder", "write_json", "save_samples", "environment"]


class OutputFolder:
    """Write a folder atomically: ``with OutputFolder(target, force) as work:`` gives a temporary
    folder beside ``target``, renamed to ``target`` when the block ends without an error (and
    deleted otherwise).

    An existing ``target`` is refused unless ``force``; with ``force`` it is replaced only once
    the new folder is complete. The check runs at construction, before any long work.

    Raises:
        FileExistsError: ``target`` exists and ``force`` is False (``err.filename`` is the target).
        NotADirectoryError: ``target`` exists and is a file or a symbolic link: never replaced.
    """

    def __init__(self, target: PathLike, force: bool = False):
        self.target = Path(target).expanduser().absolute()
        if self.target.exists() or self.target.is_symlink():
            if not force:
                raise FileExistsError(errno.EEXIST, "output folder already exists", str(self.target))
            if not self.target.is_dir() or self.target.is_symlink():
                raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder; refusing to replace it",
                                         str(self.target))
        self.work: Path | None = None

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", suffix=".partial",
                                          dir=self.target.parent))
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(self.work, 0o777 & ~mask)  # mkdtemp makes it private; give it a normal folder's mode
        return self.work

    def __exit__(self, kind, error, trace) -> bool:
        if kind is not None:
            shutil.rmtree(self.work, ignore_errors=True)
            return False
        old = None
        if self.target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", suffix=".old", dir=self.target.parent))
            os.replace(self.target, old / "replaced")
        os.replace(self.work, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
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
