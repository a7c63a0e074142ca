"""The results directory of a training run: what a user reads after (or during) a run.

    params.json                  every parameter of the run
    metrics.jsonl                one line per epoch (METRIC_KEYS)
    predictions/epoch_<n>.jsonl  id, reference, hypothesis of every validation utterance
    result.json                  status, epochs, best/final WER, time to train, target, params
    curves.png                   train loss and validation WER per epoch, with the target line (only where
                                 matplotlib is installed: an offline GPU machine's wheelhouse leaves it out)
    tensorboard/                 event files: per-step and per-epoch scalars (pytorch.tensorboard)
    mlperf_log.txt               MLPerf compliance log (pytorch.mlperf)
    checkpoints/                 last.pt, best.pt (pytorch.checkpoint)

Every file is written to a temporary name in its directory and renamed into place.
"""

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from data.files import replacing, write_atomically
from exit_status import ExitStatus, Failure, describe_os_error

SUCCESS, ABORTED = "success", "aborted"  # MLPerf's run_stop statuses: the target reached, or every epoch run


class ResultsDirError(Failure):
    """A results directory that cannot hold this run (exit status 1, before the clock starts)."""


@dataclass
class EpochMetrics:
    """One line of metrics.jsonl: an epoch's training pass and its validation."""

    epoch: int  # 1-based
    train_loss: float  # mean CTC per utterance over the epoch's steps
    wer: float  # validation corpus WER (%): the benchmark's metric
    wer_per_utterance_mean: float  # the 2018 code's averaged per-utterance WER (%)
    cer: float
    lr: float  # of the epoch's last step
    seconds: float  # the training pass, evaluation excluded
    utt_per_s: float
    audio_s_per_s: float
    skipped_steps: int  # non-finite loss or gradient, or nothing alignable
    dropped_utterances: int  # too short for their transcripts (CTC cannot align them)

    def summary(self) -> str:
        return (
            f"epoch {self.epoch}: train loss {self.train_loss:.3f}, WER {self.wer:.2f}% (per-utterance mean "
            f"{self.wer_per_utterance_mean:.2f}%), CER {self.cer:.2f}%, {self.utt_per_s:.1f} utt/s, "
            f"{self.skipped_steps} skipped steps, {self.dropped_utterances} dropped utterances"
        )


METRIC_KEYS = tuple(f.name for f in fields(EpochMetrics))


def status_of(reached: bool) -> str:
    return SUCCESS if reached else ABORTED


def exit_status_of(status: str) -> ExitStatus:
    """The one rule from a run's status to its command's exit status: 0 success, 3 target missed."""
    return ExitStatus.OK if status == SUCCESS else ExitStatus.TARGET_MISSED


def prepare_dir(results_dir: Path, resume: bool, create: bool) -> Path:
    """The results directory checked (and, where `create`, made and tested writable): it must hold no
    other run unless resumed. ResultsDirError naming it otherwise."""
    results_dir = Path(results_dir)
    last = results_dir / "checkpoints" / "last.pt"
    if not resume and last.exists():
        raise ResultsDirError(
            f"{results_dir}: holds a run already ({last}); pass --resume or choose another --results-dir"
        )
    if create:
        try:
            results_dir.mkdir(parents=True, exist_ok=True)
            probe = results_dir / f".write-test.{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise ResultsDirError(f"--results-dir: {describe_os_error(err, results_dir)}") from None
    return results_dir


def write_json(path: Path, obj) -> None:
    write_atomically(path, json.dumps(obj, indent=2) + "\n")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_atomically(path, "".join(json.dumps(row) + "\n" for row in rows))


def write_params(results_dir: Path, p_dict: dict) -> None:
    write_json(Path(results_dir) / "params.json", p_dict)


def write_metrics(results_dir: Path, metrics: list[EpochMetrics]) -> None:
    """Rewrite metrics.jsonl from all epochs so far (a resumed run rewrites what its checkpoint holds)."""
    write_jsonl(Path(results_dir) / "metrics.jsonl", [asdict(m) for m in metrics])


def write_predictions(results_dir: Path, epoch: int, predictions: list[tuple[str, str, str]]) -> None:
    """predictions: (id, reference, hypothesis) per validation utterance."""
    rows = [{"id": i, "reference": ref, "hypothesis": hyp} for i, ref, hyp in predictions]
    write_jsonl(Path(results_dir) / "predictions" / f"epoch_{epoch}.jsonl", rows)


@dataclass
class RunOutcome:
    """How a training run ended: what result.json records besides its parameters."""

    status: str  # SUCCESS (the target was reached) or ABORTED (every epoch run without reaching it)
    metrics: list[EpochMetrics]
    time_to_train_s: float
    resumed: int = 0  # segments resumed from a checkpoint; MLPerf times only unbroken runs
    precision: dict = field(default_factory=dict)  # what the run really computed in, and on which kernel
    restarts: int = 0  # elastic restarts after a rank failed: the same run went on (its time includes the loss)


def write_result(results_dir: Path, outcome: RunOutcome, p_dict: dict) -> dict:
    """result.json: how the run ended, against its target (p_dict["target_wer"]), with every parameter."""
    wers = [m.wer for m in outcome.metrics]
    result = {
        "status": outcome.status,
        "epochs": len(outcome.metrics),
        "best_wer": min(wers) if wers else None,
        "final_wer": wers[-1] if wers else None,
        "time_to_train_s": outcome.time_to_train_s,
        "target_wer": p_dict["target_wer"],
        "resumed": outcome.resumed,
        "restarts": outcome.restarts,
        "precision": outcome.precision,
        "params": p_dict,
    }
    write_json(Path(results_dir) / "result.json", result)
    return result


def read_status(results_dir: Path) -> str:
    """The status in result.json (success or aborted); Failure naming the file if it is missing or bad."""
    path = Path(results_dir) / "result.json"
    try:
        status = json.loads(path.read_text(encoding="utf-8"))["status"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise Failure(f"{path}: no readable run status ({type(err).__name__}: {err})") from None
    return status


def plot_curves(results_dir: Path, metrics: list[EpochMetrics], target_wer: float) -> bool:
    """curves.png: train loss and validation WER (with the target) per epoch, side by side. Optional:
    where matplotlib cannot be imported (the offline wheelhouse leaves it out) nothing is drawn or
    written, and False is returned (the same curves are in the TensorBoard event files); True once drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on servers; must precede pyplot
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return False

    epochs = [m.epoch for m in metrics]
    fig, (loss_ax, wer_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
    loss_ax.plot(epochs, [m.train_loss for m in metrics], "o-", color="tab:blue")
    loss_ax.set_ylabel("train loss (CTC / utterance)")
    wer_ax.plot(epochs, [m.wer for m in metrics], "s-", color="tab:red", label="validation WER")
    wer_ax.axhline(target_wer, color="black", linestyle="--", linewidth=1, label=f"target {target_wer:g}")
    wer_ax.set_ylabel("WER (%)")
    wer_ax.legend(loc="upper right")
    for ax in (loss_ax, wer_ax):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        with replacing(Path(results_dir) / "curves.png", suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return True
