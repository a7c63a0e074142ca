"""Transcribe audio files with a trained checkpoint: one `<file>\\t<transcript>` line per file.

    python -m pytorch.transcribe --checkpoint results/checkpoints/best.pt a.flac b.wav

Any format and sample rate soundfile reads; channels are averaged to mono and the audio is
resampled (soxr, band-limited) to the checkpoint's sample rate, then goes through the same
features (data.features.extract) and per-utterance normalisation the model was trained on.
A file that cannot be read is reported on stderr naming it; the others are still transcribed, and the
exit status is then 1 (exit_status.py: 1 error, 2 bad usage).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile
import soxr
import torch

import exit_status
import params
from data.features import FeatureError, extract
from exit_status import ExitStatus
from pytorch import inference, loader


class AudioError(exit_status.Failure):
    """An audio file that cannot be read or turned into features."""


def read_audio(path, sample_rate: int) -> torch.Tensor:
    """Decode, mix to mono and resample to sample_rate -> waveform (S,) float32 in [-1, 1]."""
    try:
        audio, rate = soundfile.read(path, dtype="float32", always_2d=True)  # (S, channels)
    except (OSError, RuntimeError, soundfile.LibsndfileError) as err:
        raise AudioError(f"{path}: cannot read audio: {err}") from None
    mono = audio.mean(axis=1)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ").astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(mono))


def features_of(path, p: params.Params) -> torch.Tensor:
    """Audio file -> normalised model input (F, T)."""
    try:
        frames = extract(read_audio(path, p.sample_rate), p)  # (T, F)
    except FeatureError as err:
        raise AudioError(f"{path}: {err}") from None
    return loader.normalise(frames.t())


@torch.inference_mode()
def transcribe(model, features: torch.Tensor, device) -> str:
    """One utterance's features (F, T) -> its greedy transcript (empty for audio too short for the model)."""
    batch = features.unsqueeze(0).to(device)  # (1, F, T)
    return inference.decode_batch(model, batch, torch.tensor([features.shape[1]]))[0]


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m pytorch.transcribe",
        description="Transcribe audio files (FLAC, WAV, ... at any sample rate; mixed to mono) with a "
        "DeepSpeech2 checkpoint. Prints one '<file>\\t<transcript>' line per file.",
        epilog="Only greedy CTC decoding is available: beam search with a language model (KenLM) is not "
        "implemented. Exit status: 0 all files transcribed, 1 a file or the checkpoint could not be used, "
        "2 bad usage.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="a .pt written by training")
    parser.add_argument("audio", nargs="+", type=Path, metavar="AUDIO", help="audio files to transcribe")
    parser.add_argument(
        "--precision", choices=params.choices("precision"), help="autocast (default: the checkpoint's; fp16 needs CUDA)"
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="default: cuda if available"
    )
    return parser.parse_args(argv)


def run(args) -> ExitStatus:
    model, p = inference.load_model(args.checkpoint, args.device, args.precision)
    status = ExitStatus.OK
    for path in args.audio:
        try:
            text = transcribe(model, features_of(path, p), args.device)
        except AudioError as err:
            exit_status.error(str(err))
            status = ExitStatus.ERROR
            continue
        print(f"{path}\t{text}", flush=True)
    return status


def main(argv=None) -> int:
    args = parse_args(argv)
    return exit_status.run(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
