"""Checkpoints of ``scdit.fit``: the fingerprint of a run, and resuming it.

A resumed fit recomputes everything that precedes training (validation split, vocabularies,
tokenizer fit, perturbation features, reference cells) from the same AnnData and
configuration, exactly as the interrupted fit did, and checks it against a fingerprint stored
in the checkpoint. Recomputing keeps one code path for fresh and resumed fits (nothing to
drift apart), also rebuilds tokenizer objects whose settings are not plain values, and keeps
checkpoints small; the fingerprint turns any difference (other data, another configuration,
another scdit version, a tokenizer fit that is not reproducible) into a clear error instead of
a silently different model. The fingerprint has three parts, checked in turn:

* ``config``: the model configuration (without ``train.resume``, ``train.checkpoint_dir`` and
  ``train.checkpoint_every``, which may change between the runs);
* ``data``: the AnnData's shape, gene names, the labels, covariates and doses of its cells,
  and a sample of rows of its expression matrix (before any work);
* ``inputs``: the fitted tokenizer's state and all the arrays training sees (cells in the
  model's representation, encoded conditions, covariates, doses, split), hashed in full (just
  before training).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from anndata import AnnData

from ._config import LEGACY_VALUES, ScDiTConfig, legacy_pairing
from .model import ScDiT
from .train import CHECKPOINT_NAME, StepCheckpoint, digest, read_checkpoint

#: TrainConfig fields that may differ between an interrupted run and its resumption.
RESUME_FREE = ("resume", "checkpoint_dir", "checkpoint_every")
#: Rows of the expression matrix sampled into the ``data`` fingerprint.
SAMPLE_ROWS = 256


def config_fingerprint(cfg: ScDiTConfig) -> dict[str, Any]:
    """The configuration as a flat ``{"section.field": value}`` dict (JSON values)."""
    flat = {}
    for section, fields in cfg.to_dict().items():
        for key, value in fields.items():
            if not (section == "train" and key in RESUME_FREE):
                flat[f"{section}.{key}"] = json.loads(json.dumps(value, default=str))
    return flat


def data_fingerprint(adata: AnnData, X, labels: np.ndarray, cfg: ScDiTConfig) -> dict[str, str]:
    """Hashes of the AnnData's shape, genes, cell annotations used and sampled rows of ``X``."""
    obs = [np.asarray(labels).astype(str)]
    for key in (*cfg.data.covariate_keys, cfg.data.dose_key):
        if key is not None:
            obs.append(adata.obs[key].astype(str).to_numpy())
    rows = np.unique(np.linspace(0, adata.n_obs - 1, min(adata.n_obs, SAMPLE_ROWS)).astype(int))
    chunks = []
    for start in range(0, len(rows), 64):
        sub = X[rows[start:start + 64]]
        sub = sub.toarray() if hasattr(sub, "toarray") else np.asarray(sub)
        chunks.append(np.asarray(sub, dtype=np.float64))
    return {"shape": f"{adata.n_obs} cells x {adata.n_vars} genes",
            "genes": digest(np.asarray(adata.var_names).astype(str)),
            "cell annotations": digest(*obs),
            "expression (sampled rows)": digest(*chunks)}


def inputs_fingerprint(tok, vocab, table, arrays: Sequence[Any]) -> dict[str, str]:
    """Hashes of the fitted tokenizer, the vocabularies and features, and the training arrays."""
    meta, tok_arrays = tok.state()
    return {"tokenizer": digest(json.dumps(meta, sort_keys=True, default=str),
                                *[tok_arrays[k] for k in sorted(tok_arrays)]),
            "vocabularies": digest(list(vocab.atoms), list(vocab.conditions),
                                   list(getattr(vocab, "featured", []))),
            "perturbation features": digest(None if table is None else np.asarray(table)),
            "training arrays": digest(*arrays)}


@dataclass
class Run:
    """Checkpointing of one fit: its folder, how often, and the checkpoint it resumes, if any."""

    dirpath: Path
    every: int
    fingerprint: dict[str, Any]
    resume_from: Path | None = None
    stored: dict[str, Any] | None = None
    step: int | None = None

    def check_inputs(self, tok, vocab, table, arrays: Sequence[Any]) -> None:
        """Add the ``inputs`` part; when resuming, raise if it differs from the stored one."""
        self.fingerprint["inputs"] = inputs_fingerprint(tok, vocab, table, arrays)
        if self.stored is None:
            return
        diff = _differences(self.stored.get("inputs", {}), self.fingerprint["inputs"])
        if diff:
            raise ValueError(
                f"Cannot resume the run in {str(self.dirpath)!r}: what fit derived from the data "
                f"now differs from what that run trained on ({'; '.join(diff)}). The data and "
                "configuration match, so the difference comes from the computation itself: "
                "another scdit version, or a tokenizer fit that is not reproducible (scVI "
                "trained on a GPU). Start a new run in another checkpoint_dir (or remove this "
                "one).")

    def callback(self, on_save: Callable[[Any, int], None] | None = None) -> StepCheckpoint:
        """The :class:`~scdit.train.StepCheckpoint` writing this run's checkpoints."""
        return StepCheckpoint(self.dirpath, self.every, meta=self.fingerprint, on_save=on_save)


def open_run(cfg: ScDiTConfig, adata: AnnData, X, labels: np.ndarray, *,
             verbose: bool = True) -> Run | None:
    """The checkpointing of a fit (``None`` without ``checkpoint_dir``), checked before any work.

    Raises
    ------
    ValueError
        When ``checkpoint_dir`` already holds a run's checkpoint and ``resume`` is not set, or
        when resuming a run on other data or with another configuration.
    """
    train = cfg.train
    if train.checkpoint_dir is None:
        return None
    dirpath = Path(train.checkpoint_dir)
    if dirpath.exists() and not dirpath.is_dir():
        raise ValueError(f"checkpoint_dir {str(dirpath)!r} is a file; pass a folder.")
    run = Run(dirpath, train.checkpoint_every or train.val_every,
              {"config": config_fingerprint(cfg), "data": data_fingerprint(adata, X, labels, cfg)})
    path = dirpath / CHECKPOINT_NAME
    if not path.exists():
        if train.resume:
            warnings.warn(f"resume=True, but {str(dirpath)!r} holds no checkpoint ({CHECKPOINT_NAME})"
                          "; training starts from the beginning.", UserWarning, stacklevel=3)
        return run
    info = read_checkpoint(path)
    if not train.resume:
        raise ValueError(
            f"checkpoint_dir {str(dirpath)!r} already holds the checkpoint of a run (step "
            f"{info['step']}). Pass train=TrainConfig(..., resume=True) to continue it, or "
            "another (or an empty) checkpoint_dir for a new run.")
    stored = dict(info["meta"])
    # a checkpoint written before a setting existed ran with that setting's legacy value
    legacy = {f"{s}.{k}": v for (s, k), v in LEGACY_VALUES.items()}
    legacy["flow.pairing"] = legacy_pairing(stored.get("config", {}).get("flow.source"))
    old = sorted(k for k in legacy if k not in stored.get("config", {}))
    stored["config"] = {**{k: legacy[k] for k in old}, **stored.get("config", {})}
    # those that differ now (the config part, checked first, then always differs)
    new = [k for k in old if legacy[k] != run.fingerprint["config"].get(k)]
    for part, what in (("config", "another configuration"), ("data", "other data")):
        diff = _differences(stored.get(part, {}), run.fingerprint[part])
        if diff:
            hint = (" An earlier scdit version wrote the checkpoint, before "
                    + ", ".join(f"{k} existed (that version ran as {k} = {legacy[k]!r})"
                                for k in new)
                    + ": pass these values to resume it." if new else "")
            raise ValueError(
                f"Cannot resume the run in {str(dirpath)!r}: it was trained with {what} "
                f"({'; '.join(diff)}). Resume with the same AnnData and settings as the "
                f"interrupted fit, or start a new run in another checkpoint_dir.{hint}")
    run.resume_from, run.stored, run.step = path, stored, info["step"]
    if verbose:
        print(f"scdit: resuming the run in {str(dirpath)!r} from its checkpoint at step "
              f"{info['step']}", flush=True)
    return run


def snapshot_writer(path: Path, cfg: ScDiTConfig, vocab, covariates, tok, var_names,
                    reference: AnnData, summary: dict[str, Any]) -> Callable[[Any, int], None]:
    """``write(field, step)``: save the model with ``field`` (the weights the run would return
    at ``step``) to ``path``, replacing the previous one, so that ``scdit.load(path)`` gives
    the model as of the latest checkpoint (``summary["checkpoint_step"]``)."""
    def write(field, step: int) -> None:
        model = ScDiT(cfg, vocab, covariates, tok, field, var_names, reference,
                      {**summary, "checkpoint_step": int(step)})
        model.save(path, overwrite=True)

    return write


def _differences(stored: dict[str, Any], now: dict[str, Any], limit: int = 6) -> list[str]:
    """``"key: <stored> in the checkpoint, <now> now"`` for each differing key."""
    keys = sorted(set(stored) | set(now))
    out = []
    for key in keys:
        a, b = stored.get(key, "<absent>"), now.get(key, "<absent>")
        if a != b:
            hashed = isinstance(a, str) and isinstance(b, str) and len(a) == len(b) == 32
            out.append(f"{key} differ" if hashed else f"{key}: {a!r} in the checkpoint, {b!r} now")
    return out[:limit] + ([f"… {len(out) - limit} more"] if len(out) > limit else [])
