"""Checkpoints: save a training run at the end of epochs, and continue it later.

A checkpoint is a model directory (:mod:`dsmlr.io.model_files`: a manifest plus one
checksummed ``.npy`` file per class block, so ``dsmlr evaluate --model`` reads it) with a
``checkpoint.json`` beside it holding what continuing needs besides the weights: the
epoch, the history, the step-size factor, the stopping rule's state, every rank's random
generator state and the settings that define the problem, plus AdaGrad's accumulators
when that optimiser runs.  Layout::

    DIR/epoch-000012/            the newest complete checkpoint
        manifest.json            blocks, classes, settings, history (the model)
        checkpoint.json          resume state (written before the manifest)
        block_00000.npy ...      each rank writes its own blocks
        acc_00000.npy ...        AdaGrad only
    DIR/epoch-000011/            the one before (``keep`` are kept)

Saving is collective.  Every rank writes its files into ``DIR/.epoch-000012.partial``;
rank 0 then writes the state and manifest there and renames the directory to
``epoch-000012``.  The rename is the commit: a crash at any earlier moment leaves only a
``.partial`` directory, which is never loaded (and is cleared by the next save of that
epoch).  Under MPI, ``DIR`` must be on a filesystem every rank sees.

Resuming (:func:`resume_start`) loads the newest complete checkpoint.  With the same
number of ranks (or in-process workers) and settings, a synchronous run then ends with
exactly the model of an uninterrupted one.  With another number of ranks the class
blocks are re-cut from the saved ones (any layout loads), each rank starts a new random
stream from the seed and the epoch, and AdaGrad's accumulators restart at zero: training
goes on correctly, but not bit for bit as it would have.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from dsmlr.engines.base import EngineConfig, EpochRecord, ResumeState, Start
from dsmlr.engines.optimizers import update_rule
from dsmlr.errors import DataError, agreed
from dsmlr.io.model_files import (
    ModelData,
    read_block,
    read_manifest,
    read_npy,
    write_block,
    write_manifest,
    write_npy,
)

__all__ = [
    "FAILURE_FILE",
    "Checkpointer",
    "checkpoint_settings",
    "latest_checkpoint",
    "resume_start",
]

STATE_FILE = "checkpoint.json"
#: Where the MPI watchdog records which rank died (:mod:`dsmlr.comm.watchdog`).
FAILURE_FILE = "failure.txt"
STATE_FORMAT = "dsmlr-checkpoint"

#: Settings that define the optimisation problem: resuming with others is refused.
PROBLEM_SETTINGS = ("n_samples", "n_features", "n_classes", "fit_intercept", "lam", "dtype")


def checkpoint_settings(cfg: EngineConfig) -> dict:
    """The engine settings a checkpoint records (JSON values)."""
    out = {k: v for k, v in asdict(cfg).items() if k != "straggler"}
    out["dtype"] = str(np.dtype(cfg.dtype))
    return out


def _epoch_dir(directory: Path, epoch: int) -> Path:
    return directory / f"epoch-{epoch:06d}"


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint in ``directory`` (None if there is none)."""
    root = Path(directory)
    if not root.is_dir():
        return None
    done = [
        p for p in root.glob("epoch-*")
        if p.is_dir() and (p / "manifest.json").is_file() and (p / STATE_FILE).is_file()
    ]  # fmt: skip
    return max(done, key=lambda p: p.name, default=None)


class Checkpointer:
    """Writes checkpoints of one run (see module docstring); the engines call it.

    Parameters
    ----------
    directory : path
        Where checkpoints go (created if missing).
    every : int
        Save after every ``every``-th epoch that has an exact objective, and after the
        last epoch of the run.
    classes : ndarray
        The class labels (so that a checkpoint loads as a model).
    fit_intercept : bool
    params : dict
        Estimator parameters (JSON values) recorded in the manifest.
    settings : dict
        :func:`checkpoint_settings` of the run.
    keep : int
        How many of the newest checkpoints stay; older ones are deleted.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        every: int,
        *,
        classes: np.ndarray,
        fit_intercept: bool,
        params: dict,
        settings: dict,
        keep: int = 2,
    ) -> None:
        self.directory = Path(directory)
        self.every = max(1, int(every))
        self.classes = np.asarray(classes)
        self.fit_intercept = bool(fit_intercept)
        self.params = params
        self.settings = settings
        self.keep = max(1, int(keep))

    def due(self, epoch: int, previous: int) -> bool:
        # A pure function of the epochs: in-process workers share this object, and all
        # must decide alike.
        return epoch // self.every > previous // self.every

    def save(self, comm, epoch: int, blocks: list, state: ResumeState) -> None:
        """Write the checkpoint of ``epoch`` (collective: every rank calls it)."""
        partial = self.directory / f".epoch-{epoch:06d}.partial"

        def prepare() -> None:
            if comm.rank == 0:
                self.directory.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(partial, ignore_errors=True)
                partial.mkdir()

        agreed(comm, prepare)
        comm.barrier()  # the directory exists before anyone writes into it
        carried = update_rule(self.settings.get("optimizer", "svrg")).carry

        def write_mine() -> list[dict]:
            entries = []
            for blk in blocks:
                entry = write_block(partial, blk.q, blk.classes, blk.W.T)
                _fsync(partial / entry["file"])
                if "acc" in carried:
                    entry["acc_sha256"] = _save_array(partial / f"acc_{blk.q:05d}.npy", blk.acc)
                entries.append(entry)
            return entries

        mine = agreed(comm, write_mine)
        gathered = comm.allgather((mine, state.rng[0] if state.rng else None))

        def commit() -> None:
            if comm.rank != 0:
                return
            entries = [e for part, _ in gathered for e in part]
            rng = [r for _, r in gathered]
            record = {
                "format": STATE_FORMAT, "version": 1, "epoch": epoch, "n_ranks": comm.size,
                "blocks": sorted([e["classes"] for e in entries]),
                "acc": {e["file"]: e["acc_sha256"] for e in entries if "acc_sha256" in e},
                "settings": self.settings, "backoff": state.backoff, "best": state.best,
                "quiet": state.quiet, "elapsed": state.elapsed, "converged": state.converged,
                "rng": rng,
            }  # fmt: skip
            _write_json(partial / STATE_FILE, record)
            shape = (len(self.classes), int(self.settings["n_features"]) + self.fit_intercept)
            history = [r.as_dict() for r in state.history]
            model = ModelData(None, self.classes, self.fit_intercept, self.params, history,
                              {"checkpoint_epoch": epoch})  # fmt: skip
            write_manifest(partial, [_model_entry(e) for e in entries], shape,
                           self.settings["dtype"], model)  # fmt: skip
            final = _epoch_dir(self.directory, epoch)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(partial, final)  # the commit point
            _fsync_dir(self.directory)
            old = sorted(p for p in self.directory.glob("epoch-*") if p.is_dir())
            for stale in old[: -self.keep]:
                shutil.rmtree(stale, ignore_errors=True)

        agreed(comm, commit)


def _model_entry(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k != "acc_sha256"}


def _write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record))
    _fsync(tmp)
    os.replace(tmp, path)


def _fsync(path: Path) -> None:
    """Push ``path`` to disk, so a checkpoint committed by the rename survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync(path)
    except OSError:  # not every filesystem lets a directory be synced
        pass


def _read_state(path: Path) -> dict:
    file = path / STATE_FILE
    try:
        record = json.loads(file.read_text())
        if record.get("format") != STATE_FORMAT:
            raise ValueError(f"format {record.get('format')!r}")
        int(record["epoch"])
        dict(record["settings"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"not a readable checkpoint state ({exc})", str(file)) from None
    return record


def _check_compatible(saved: dict, settings: dict, classes: np.ndarray, manifest, where: Path):
    differ = [
        f"{k} {saved.get(k)!r} -> {settings.get(k)!r}"
        for k in PROBLEM_SETTINGS
        if saved.get(k) != settings.get(k)
    ]
    if not np.array_equal(manifest.classes, classes):
        differ.append("the class labels")
    if differ:
        raise DataError(
            "cannot resume: this run differs from the checkpoint in "
            + ", ".join(differ)
            + " (use another --checkpoint-dir to start afresh)",
            str(where),
        )


def resume_start(
    directory: str | os.PathLike, comm, cfg: EngineConfig, classes: np.ndarray
) -> tuple[Start, int, int] | None:
    """Load the newest checkpoint of ``directory`` for this run (collective).

    Returns
    -------
    (Start, seed, epoch) or None
        The start of the continued run, the seed the checkpointed run used (which the
        continued run must use too) and the checkpoint's epoch; None when ``directory``
        holds no complete checkpoint.

    Raises
    ------
    DataError
        On every rank alike: the checkpoint does not match this run's problem, or a file
        is missing, truncated or altered (named in the message).
    """
    found = latest_checkpoint(directory)
    if found is None:
        return None
    settings = checkpoint_settings(cfg)

    def load() -> tuple:
        record = _read_state(found)
        manifest = read_manifest(found)
        _check_compatible(record["settings"], settings, classes, manifest, found)
        return record, manifest

    record, manifest = agreed(comm, load)  # type: ignore[misc]
    saved_blocks = [tuple(b) for b in record["blocks"]]
    cache: dict[int, np.ndarray] = {}

    def weights(k0: int, k1: int) -> np.ndarray:
        # The layout that was saved reads its block as it is: no second copy of it.
        for index, (lo, hi, _, _) in enumerate(manifest.blocks):
            if (lo, hi) == (k0, k1) and index not in cache:
                return read_block(manifest, index)
        # Any saved layout loads: the rows of classes k0:k1 from the blocks covering them.
        out = np.empty((k1 - k0, manifest.n_columns), dtype=manifest.dtype)
        for index, (lo, hi, _, _) in enumerate(manifest.blocks):
            if hi <= k0 or lo >= k1:
                continue
            if index not in cache:
                cache[index] = read_block(manifest, index)
            a, b = max(lo, k0), min(hi, k1)
            out[a - k0 : b - k0] = cache[index][a - lo : b - lo]
        return out

    def acc(q: int, k0: int, k1: int) -> np.ndarray | None:
        name = f"acc_{q:05d}.npy"
        digest = record.get("acc", {}).get(f"block_{q:05d}.npy")
        if digest is None or (k0, k1) not in saved_blocks:
            return None  # another block layout: AdaGrad restarts
        return _read_checked(found / name, digest, manifest.n_columns)

    history = [EpochRecord(**entry) for entry in manifest.history]
    state = ResumeState(
        epoch=int(record["epoch"]), history=history, backoff=float(record["backoff"]),
        best=float(record["best"]), quiet=int(record["quiet"]),
        elapsed=float(record["elapsed"]), converged=bool(record["converged"]),
        # run_epochs uses these only with as many ranks as wrote them.
        rng=record["rng"] if None not in record["rng"] else None,
    )  # fmt: skip
    # A block file that fails its checksum raises on the rank reading it: in-process
    # workers then all stop, and under MPI the command line aborts the job.
    start = Start(weights=weights, acc=acc, state=state)
    return start, int(record["settings"]["seed"]), state.epoch


def _save_array(path: Path, array: np.ndarray) -> str:
    """Write ``array`` as ``.npy`` (durably) and return its SHA-256."""
    digest = write_npy(path, array)
    _fsync(path)
    return digest


def _read_checked(path: Path, digest: str, n_columns: int) -> np.ndarray:
    return read_npy(path, digest, (n_columns,), np.float64, what="checkpoint file")
