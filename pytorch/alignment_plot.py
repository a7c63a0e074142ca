"""The picture of one utterance's alignment: its spectrogram, the model's per-frame label posteriors
with the forced-alignment path on them, and the word boundaries across both, on one time axis.

    plot_alignment("a.png", features (F, T), log_probs (T', C), alignment, words, clock, title)

matplotlib is optional in this project (requirements.txt; the GPU wheelhouse leaves it out): without
it `--plot` stops with a message saying so. The PNG is written all or nothing (data.files.replacing).
"""

from pathlib import Path

import torch

import exit_status
from data.files import replacing
from data.labels import LABELS
from pytorch.align import Alignment, FrameClock, WordTime

# How the labels read on the posteriors' axis: the blank and the space get visible names.
LABEL_NAMES = ["blank", "'"] + list(LABELS[2:-1]) + ["space"]


class PlotError(exit_status.Failure):
    """matplotlib is missing, or the picture cannot be written; the message says which."""


def plot_alignment(
    path: Path,
    features: torch.Tensor,
    log_probs: torch.Tensor,
    alignment: Alignment,
    words: list[WordTime],
    clock: FrameClock,
    title: str,
) -> None:
    """Draw the picture (module docstring) into the PNG file `path`."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError(f"--plot {path}: needs matplotlib (pip install matplotlib)") from None
    spectrogram = features.detach().cpu().float().numpy()  # (F, T) as the model saw it (normalised)
    posteriors = log_probs.detach().cpu().float().exp().numpy().T  # (C, T')
    input_s = clock.hop_s * spectrogram.shape[1]
    output_frames = posteriors.shape[1]
    left, right = clock.start(0), clock.end(output_frames - 1) if output_frames else clock.start(0)

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8.0, 2.0 + 3.0 * input_s), 7.5), sharex=True)
    top.imshow(spectrogram, origin="lower", aspect="auto", cmap="magma", extent=(0, input_s, 0, spectrogram.shape[0]))
    top.set_ylabel("feature bin")
    top.set_title(title)
    bottom.imshow(
        posteriors,
        origin="lower",
        aspect="auto",
        cmap="Greys",
        vmin=0,
        vmax=1,
        extent=(left, right, -0.5, len(LABELS) - 0.5),
    )
    centres = [clock.centre(t) for t in range(output_frames)]
    bottom.plot(centres, alignment.labels, ".", color="tab:red", markersize=3, label="forced alignment")
    bottom.set_yticks(range(len(LABELS)), LABEL_NAMES, fontsize=6)
    bottom.set_ylabel("label posterior")
    bottom.set_xlabel("time (s)")
    bottom.legend(loc="upper right", fontsize=7)
    for word in words:
        for axis in (top, bottom):
            axis.axvspan(word.start, word.end, color="tab:cyan", alpha=0.15)
            axis.axvline(word.start, color="tab:blue", linewidth=0.8)
            axis.axvline(word.end, color="tab:blue", linewidth=0.8, linestyle="--")
        top.text(
            (word.start + word.end) / 2, spectrogram.shape[0] * 0.92, word.word, ha="center", color="white", fontsize=9
        )
    fig.tight_layout()
    try:
        with replacing(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110)
    except OSError as err:
        raise PlotError(f"--plot: cannot write {exit_status.describe_os_error(err, path)}") from None
    finally:
        plt.close(fig)
