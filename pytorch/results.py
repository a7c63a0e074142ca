"""The results directory of a training run: what a user reads after (or during) a run.

    params.json                  every parameter of the run
    metrics.jsonl                one line per epoch (METRIC_KEYS)
    predictions/epoch_<n>.jsonl  id, reference, hypothesis of every validation utterance
    result.json                  status, epochs, best/final WER, time to train, target, params
    curves.png                   train loss and validation WER per epoch, with the target line
    mlperf_log.txt               MLPerf compliance log (pytorch.mlperf)
    checkpoints/                 last.pt, best.pt (pytorch.checkpoint)

Every file is written to a temporary name in its directory and renamed into place.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from data.files import replacing, write_atomically
from exit_status import Failure

METRIC_KEYS = (
    "epoch",
    "train_loss",
    "wer",
    "wer_per_utterance_mean",
    "cer",
    "lr",
    "seconds",
    "utt_per_s",
    "audio_s_per_s",
    "skipped_steps",
    "dropped_utterances",
)


def write_json(path: Path, obj) -> None:
    write_atomically(path, json.dumps(obj, indent=2) + "\n")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_atomically(path, "".join(json.dumps(row) + "\n" for row in rows))


def write_params(results_dir: Path, p_dict: dict) -> None:
    write_json(Path(results_dir) / "params.json", p_dict)


def write_metrics(results_dir: Path, metrics: list[dict]) -> None:
    """Rewrite metrics.jsonl from all epochs so far (a resumed run rewrites what its checkpoint holds)."""
    for row in metrics:
        missing = [k for k in METRIC_KEYS if k not in row]
        if missing:
            raise ValueError(f"metrics of epoch {row.get('epoch')}: missing {', '.join(missing)}")
    write_jsonl(Path(results_dir) / "metrics.jsonl", [{k: row[k] for k in METRIC_KEYS} for row in metrics])


def write_predictions(results_dir: Path, epoch: int, predictions: list[tuple[str, str, str]]) -> None:
    """predictions: (id, reference, hypothesis) per validation utterance."""
    rows = [{"id": i, "reference": ref, "hypothesis": hyp} for i, ref, hyp in predictions]
    write_jsonl(Path(results_dir) / "predictions" / f"epoch_{epoch}.jsonl", rows)


@dataclass
class RunOutcome:
    """How a training run ended: what result.json records besides its parameters."""

    status: str  # success (the target was reached) or aborted (every epoch run without reaching it)
    metrics: list[dict]  # one row per epoch (METRIC_KEYS)
    time_to_train_s: float
    resumed: int = 0  # segments resumed from a checkpoint; MLPerf times only unbroken runs
    precision: dict = field(default_factory=dict)  # what the run really computed in (pytorch.precision)


def write_result(results_dir: Path, outcome: RunOutcome, p_dict: dict) -> dict:
    """result.json: how the run ended, against its target (p_dict["target_wer"]), with every parameter."""
    wers = [m["wer"] for m in outcome.metrics]
    result = {
        "status": outcome.status,
        "epochs": len(outcome.metrics),
        "best_wer": min(wers) if wers else None,
        "final_wer": wers[-1] if wers else None,
        "time_to_train_s": outcome.time_to_train_s,
        "target_wer": p_dict["target_wer"],
        "resumed": outcome.resumed,
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


def plot_curves(results_dir: Path, metrics: list[dict], target_wer: float) -> None:
    """curves.png: train loss and validation WER (with the target) per epoch, side by side."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [m["epoch"] for m in metrics]
    fig, (loss_ax, wer_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
    loss_ax.plot(epochs, [m["train_loss"] for m in metrics], "o-", color="tab:blue")
    loss_ax.set_ylabel("train loss (CTC / utterance)")
    wer_ax.plot(epochs, [m["wer"] for m in metrics], "s-", color="tab:red", label="validation WER")
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
