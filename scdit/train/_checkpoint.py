"""Checkpoints that resume a run exactly: writing them every N steps, reading their metadata."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

#: File name of the latest complete checkpoint in a checkpoint folder.
CHECKPOINT_NAME = "last.ckpt"
#: Version of what scdit adds to Lightning's checkpoint (``checkpoint["scdit"]``).
CHECKPOINT_FORMAT = 1


def rng_state() -> dict[str, Any]:
    """The global random states of torch (CPU and initialised CUDA devices), numpy and Python."""
    # the legacy global numpy state is what code calling np.random.* draws from: save it too
    kind, key, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "numpy": {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore global random states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    legacy = (n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    np.random.set_state(legacy)  # noqa: NPY002
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def digest(*parts: Any) -> str:
    """Hex BLAKE2b digest of arrays (dense or scipy sparse), strings and numbers, in order."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        if part is None:
            h.update(b"<none>")
        elif hasattr(part, "tocsr"):  # scipy sparse: its CSR arrays
            csr = part.tocsr()
            h.update(f"csr{csr.shape}{csr.dtype}".encode())
            for arr in (csr.indptr, csr.indices, csr.data):
                h.update(_bytes(arr))
        elif isinstance(part, (np.ndarray, torch.Tensor)):
            arr = np.ascontiguousarray(part.detach().cpu().numpy() if torch.is_tensor(part) else part)
            if arr.dtype == object:
                h.update(repr(arr.tolist()).encode())
            else:
                h.update(f"{arr.shape}{arr.dtype}".encode())
                h.update(_bytes(arr))
        else:
            h.update(repr(part).encode())
        h.update(b"|")
    return h.hexdigest()


def _bytes(arr: np.ndarray) -> np.ndarray:
    """The bytes of an array as a flat uint8 view (no copy when it is contiguous)."""
    return np.ascontiguousarray(arr).reshape(-1).view(np.uint8)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """What scdit stored in a checkpoint (``meta``: the run's fingerprint; ``step``; ``format``).

    The file is memory-mapped and read without unpickling arbitrary objects
    (``weights_only=True``); a file that is not a complete checkpoint raises a ``ValueError``
    naming it.
    """
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # truncated, not a zip file, unexpected objects
        raise ValueError(f"Cannot read the checkpoint {path}: {err}. Delete it (and resume from "
                         "scratch) or point checkpoint_dir at another run.") from err
    info = ckpt.get("scdit") if isinstance(ckpt, dict) else None
    if not isinstance(info, dict) or "meta" not in info:
        raise ValueError(f"{path} is not a checkpoint written by scdit (no 'scdit' section); "
                         "point checkpoint_dir at the folder of an scdit run.")
    return {"format": info.get("format"), "meta": info["meta"], "step": int(ckpt["global_step"])}


class StepCheckpoint(Callback):
    """Write a complete checkpoint every ``every`` optimisation steps, and at the run's last
    step, into ``dirpath``.

    Each checkpoint is Lightning's (weights, optimiser, learning-rate schedule, step, loop and
    callback states, the training loader's position) plus what :class:`FlowModule` adds (EMA
    weights, best validated EMA state, history, random states) and ``meta`` (under
    ``checkpoint["scdit"]``), e.g. a fingerprint of the run's data and configuration. It is
    written to a temporary file and renamed to ``last.ckpt``, so that ``last.ckpt`` is always
    complete, even when the process is killed while writing. After each checkpoint (once the
    validation of its step, if any, has run: before the next step or when training ends),
    ``on_save(field, step)`` receives the weights the run would return if it ended there (e.g.
    to save a loadable model next to it); it runs with the global random states preserved.

    With several processes every one takes part in writing a checkpoint (Lightning gathers
    their states and waits for all), but only global rank 0 touches the folder: it writes the
    file, renames it and calls ``on_save``.
    """

    def __init__(self, dirpath: str | Path, every: int, *, meta: dict[str, Any] | None = None,
                 on_save: Callable[[Any, int], None] | None = None):
        if int(every) < 1:
            raise ValueError(f"checkpoint_every must be a positive number of steps, got {every!r}.")
        self.dirpath = Path(dirpath)
        self.every = int(every)
        self.meta = dict(meta or {})
        self.on_save = on_save
        self.last_step: int | None = None
        self._snapshot_due = False

    @property
    def path(self) -> Path:
        """The latest complete checkpoint."""
        return self.dirpath / CHECKPOINT_NAME

    def on_train_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        for stale in self.dirpath.glob(f".{CHECKPOINT_NAME}.*.tmp"):  # of killed writes
            stale.unlink(missing_ok=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = int(trainer.global_step)
        last = step >= int(trainer.max_steps) > 0  # the final step: always (even if < every)
        if step == self.last_step or (step % self.every and not last):
            return
        zero = trainer.is_global_zero
        if zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
        tmp = self.dirpath / f".{CHECKPOINT_NAME}.{os.getpid()}.tmp"
        trainer.save_checkpoint(tmp)  # in every process (a collective); rank 0 writes the file
        if zero:
            os.replace(tmp, self.path)
        self.last_step = step
        self._snapshot_due = self.on_save is not None and zero

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._write_snapshot(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._write_snapshot(pl_module)

    def _write_snapshot(self, pl_module) -> None:
        """``on_save`` for the latest checkpoint, once the validation of its step (if any) ran."""
        if not self._snapshot_due or self.on_save is None or self.last_step is None:
            return
        self._snapshot_due = False
        saved = rng_state()
        try:
            self.on_save(pl_module.final_field(), self.last_step)
        finally:
            set_rng_state(saved)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint["scdit"] = {"format": CHECKPOINT_FORMAT, "meta": self.meta}
