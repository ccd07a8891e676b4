"""A trial's checkpoint as it travels: the bytes a workload saved at one epoch, and how to give them back.

A workload hands ``report(epoch, ..., checkpoint=obj)`` a file path, bytes, or
any object ``torch.save`` (or, without torch, ``pickle``) can write, such as a
dict of state dicts. The bytes go to the driver with the epoch rows (through
Ray's object store on a cluster, so a worker node needs no shared disk); the
driver keeps them in the study's Optuna artifact store. A trial run again
after its worker died gets the last one back as ``report.restored``.

Worker side: no store, no driver imports.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import pickle
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# How the bytes were made, so that load() gives back what was saved.
FILE, BYTES, TORCH, PICKLE = "file", "bytes", "torch", "pickle"
FORMATS = (FILE, BYTES, TORCH, PICKLE)
_FILENAMES = {BYTES: "checkpoint.bin", TORCH: "checkpoint.pt", PICKLE: "checkpoint.pkl"}


@dataclass(frozen=True)
class Checkpoint:
    """A trial's state at the end of ``epoch``: ``data`` as ``format`` says, named ``filename``."""

    epoch: int
    data: bytes = field(repr=False)
    format: str = TORCH
    filename: str = _FILENAMES[TORCH]
    # Epochs the trial had reported up to this one (its own and those it resumed from).
    reported: int = 0

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @functools.cached_property
    def path(self) -> Path:
        """The checkpoint as a file on this machine (written on first use), under its original name."""
        path = Path(tempfile.mkdtemp(prefix="tuner-checkpoint-")) / self.filename
        path.write_bytes(self.data)
        return path

    def load(self) -> Any:
        """What the workload saved: the object (torch/pickle), the bytes, or for a file its path."""
        if self.format == FILE:
            return self.path
        if self.format == BYTES:
            return self.data
        if self.format == PICKLE:
            return pickle.loads(self.data)  # the study's own artifact, written by its own workload
        import torch

        return torch.load(io.BytesIO(self.data), map_location="cpu", weights_only=False)


def pack(obj: Any, epoch: int) -> Checkpoint:
    """The checkpoint a workload passed to ``report``: a path's file, bytes as they are, else the object saved."""
    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj)
        if not path.is_file():
            raise ValueError(f"report(epoch, checkpoint=...): a path must name a file, but {str(path)!r} is not one. "
                             "Fix: save the checkpoint first (torch.save(state, path)), or pass the state itself.")
        return Checkpoint(epoch, path.read_bytes(), FILE, path.name)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return Checkpoint(epoch, bytes(obj), BYTES, _FILENAMES[BYTES])
    buffer = io.BytesIO()
    torch = sys.modules.get("torch")  # a workload that never imported torch saves with pickle
    try:
        if torch is not None:
            torch.save(obj, buffer)
        else:
            pickle.dump(obj, buffer, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise TypeError(f"report(epoch, checkpoint=...): {type(obj).__name__} cannot be saved "
                        f"({type(exc).__name__}: {exc}). Fix: pass a state dict, bytes, or the path of a "
                        "file you saved.") from None
    fmt = TORCH if torch is not None else PICKLE
    return Checkpoint(epoch, buffer.getvalue(), fmt, _FILENAMES[fmt])
