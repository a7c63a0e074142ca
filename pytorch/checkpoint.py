"""Checkpoints that let a stopped run continue exactly: <results-dir>/checkpoints/{last,best}.pt.

A checkpoint is a plain dict of tensors and Python primitives, so `torch.load(weights_only=True)`
reads it (no pickled code is ever run: a checkpoint is data, wherever it came from). Model and
optimiser state are saved from the unwrapped model, so a checkpoint written by one world size
resumes in another. The run's progress is a RunState, stored as a plain dict.
"""

import errno
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

import params
from data.files import replacing
from exit_status import Failure, describe_os_error
from pytorch.results import EpochMetrics

# Parameters that change the model's tensors or the features it reads: a checkpoint made with other
# values cannot be resumed. Optimisation knobs (lr, epochs, ...) may change between segments.
MODEL_PARAMS = tuple(name for name, k in params.KNOBS.items() if k.group in (params.FEATURES, params.MODEL))
FORMAT = 2  # 2: the progress is the trainer's RunState (format 1 held an untyped dict)


class CheckpointError(Failure):
    """A checkpoint that is missing, unreadable or belongs to another model."""


@dataclass
class RunState:
    """Where a run stands: what a checkpoint stores besides the tensors, and what a resume continues."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps taken (skipped ones included): the lr schedule's clock
    metrics: list[EpochMetrics] = field(default_factory=list)  # one per completed epoch
    best_wer: float | None = None
    train_seconds: float = 0.0  # timed seconds of the segments before this one (resumed runs)
    resumed: int = 0  # times this run was resumed; MLPerf times only unbroken runs

    def reached(self, target_wer: float) -> bool:
        return bool(self.metrics) and self.metrics[-1].wer <= target_wer

    def finished(self, p: params.Params) -> bool:
        """The stop rule: the target met, or every epoch run."""
        return self.reached(p.target_wer) or self.epoch >= p.epochs

    @classmethod
    def from_dict(cls, saved: dict) -> "RunState":
        return cls(**saved | {"metrics": [EpochMetrics(**m) for m in saved["metrics"]]})


def checkpoint_dir(results_dir: Path) -> Path:
    return Path(results_dir) / "checkpoints"


def last_path(results_dir: Path) -> Path:
    """The checkpoint a --resume continues."""
    return checkpoint_dir(results_dir) / "last.pt"


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete the temporary files a killed run left in `directory` (.<name>.tmp.*); returns them."""
    stale = sorted(Path(directory).glob(".*.tmp.*")) if Path(directory).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def save(path: Path, state: dict) -> None:
    """torch.save to a temporary name in the same directory, then rename: never half-written.

    A full disk or a refused write is a Failure naming the file (torch reports a failed write as
    `RuntimeError: ... unexpected pos ...`, which says neither where nor why).
    """
    try:
        with replacing(path) as tmp:
            torch.save(state, tmp)
    except OSError as err:
        raise Failure(f"cannot write the checkpoint: {describe_os_error(err, path)}") from None
    except RuntimeError as err:
        if shutil.disk_usage(Path(path).parent).free < (1 << 20):
            reason = describe_os_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path)
        else:
            reason = f"{path}: {str(err).splitlines()[0]}"
        raise Failure(f"cannot write the checkpoint: {reason}") from None


def load(path: Path) -> dict:
    """The checkpoint's dict; CheckpointError naming the file if it is missing, damaged or foreign."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file; all mean the same here
        # Never pass on torch's advice to load with weights_only=False: that runs pickled code.
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: not a readable checkpoint of this trainer (damaged, or made by other code): "
            f"{first.split('. ')[0]}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a checkpoint of this trainer (format {FORMAT})")
    return state


def check_compatible(saved: dict, p: params.Params, path: Path) -> None:
    """Refuse a checkpoint whose model-defining parameters differ from p, naming them."""
    current = p.to_dict()
    differ = [name for name in MODEL_PARAMS if saved.get(name) != current[name]]
    if differ:
        detail = ", ".join(f"{n}={saved.get(n)!r} in checkpoint but {current[n]!r} now" for n in differ)
        raise CheckpointError(f"{path}: checkpoint was made for another model: {detail}")


def rng_state() -> dict:
    """Every random generator's state, as tensors and plain types (weights_only-loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["internal"].tolist()), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_resume(results_dir: Path, p: params.Params) -> dict:
    """The checkpoint a --resume continues, checked against p before anything is logged or written."""
    path = last_path(results_dir)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint to resume from (run without --resume first)")
    saved = load(path)
    check_compatible(saved["params"], p, path)
    return saved


def snapshot(model, optimizer, scaler, p: params.Params, state: RunState) -> dict:
    """Everything a resumed run needs."""
    return {
        "format": FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(),
        "params": p.to_dict(),
        "progress": asdict(state),
        "saved_at": time.time(),  # an elastic restart's clock runs on from here: the lost time counts
    }


def restore(saved: dict, model, optimizer, scaler) -> RunState:
    """Load a snapshot into model/optimiser/scaler and the RNGs; returns where the run stood."""
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if scaler is not None and saved["scaler"] is not None:
        scaler.load_state_dict(saved["scaler"])
    set_rng_state(saved["rng"])
    return RunState.from_dict(saved["progress"])


def link_or_copy(source: Path, target: Path) -> None:
    """Make target the same file as source (a hard link: no second write of a large model), atomically."""
    with replacing(target) as tmp:
        try:
            os.link(source, tmp)
        except OSError:  # file systems without hard links
            tmp.write_bytes(Path(source).read_bytes())
