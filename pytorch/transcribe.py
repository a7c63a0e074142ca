"""Transcribe audio files with a trained checkpoint: one `<file>\\t<transcript>` line per file, or with
--timestamps one JSON object per file with each word's start and end.

    python -m pytorch.transcribe --checkpoint results/checkpoints/best.pt a.flac b.wav
    python -m pytorch.transcribe --checkpoint best.pt --decoder beam --lm lm.arpa --timestamps --plot a.png a.flac

Any format and sample rate soundfile reads; channels are averaged to mono and the audio is
resampled (soxr, band-limited) to the checkpoint's sample rate, then goes through the same
features (data.features.extract) and per-utterance normalisation the model was trained on.
Decoding is greedy unless --decoder beam (pytorch.decoders). Word times come from a CTC forced
alignment (pytorch.align) of the printed transcript against the model's output, whichever decoder
made it; --plot draws that alignment (pytorch.alignment_plot).
A file that cannot be read is reported on stderr naming it; the others are still transcribed, and the
exit status is then 1 (exit_status.py: 1 error, 2 bad usage).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import soundfile
import soxr
import torch

import exit_status
import params
from data import labels
from data.features import FeatureError, extract
from data.normalization import FeatureStats, normalise
from exit_status import ExitStatus
from pytorch import align, alignment_plot, backends, decoders, inference, streaming


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


def features_of(path, p: params.Params, stats: FeatureStats | None = None) -> torch.Tensor:
    """Audio file -> model input (F, T), normalised per utterance, or by the model's `stats`
    (normalization=global: model.feature_stats())."""
    try:
        frames = extract(read_audio(path, p.sample_rate), p)  # (T, F)
    except FeatureError as err:
        raise AudioError(f"{path}: {err}") from None
    return normalise(frames.t(), stats)


@torch.inference_mode()
def transcribe(model, features: torch.Tensor, device, decoder: decoders.Decoder = inference.GREEDY) -> str:
    """One utterance's features (F, T) -> its transcript (greedy unless another decoder is given;
    empty for audio too short for the model)."""
    batch = features.unsqueeze(0).to(device)  # (1, F, T)
    return inference.decode_batch(model, batch, torch.tensor([features.shape[1]]), decoder)[0]


@torch.inference_mode()
def log_probs_of(model, features: torch.Tensor, device) -> torch.Tensor:
    """One utterance's features (F, T) -> the model's log-probabilities (T', C), float32 on the CPU."""
    log_probs, out_lengths = model(features.unsqueeze(0).to(device), torch.tensor([features.shape[1]]))
    return log_probs[: int(out_lengths[0]), 0].float().cpu()


def timed_transcript(log_probs: torch.Tensor, decoder: decoders.Decoder, clock: align.FrameClock, audio_s: float):
    """(transcript, its alignment, its words' times) of one utterance's log-probabilities (T', C)."""
    text = decoder.decode(log_probs.unsqueeze(1), torch.tensor([log_probs.shape[0]]))[0]
    alignment = align.force_align(log_probs, labels.encode(text))
    return text, alignment, align.word_times(alignment, text, clock, audio_s)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m pytorch.transcribe",
        description="Transcribe audio files (FLAC, WAV, ... at any sample rate; mixed to mono) with a "
        "DeepSpeech2 checkpoint. Prints one '<file>\\t<transcript>' line per file.",
        epilog="Decoding is greedy (the benchmark's metric) unless --decoder beam; with --lm it is a beam "
        "search with a word n-gram LM (python -m pytorch.lm builds one; tune its weights with "
        "python -m pytorch.tune_lm). --timestamps prints one JSON object per file instead: "
        '{"file", "transcript", "words": [{"word", "start", "end"}]}, times in seconds from a CTC forced '
        "alignment. Exit status: 0 all files transcribed, 1 a file, the checkpoint or the LM could not be used, "
        "2 bad usage.",
    )
    parser.add_argument(
        "--checkpoint", required=True, type=Path, help="a .pt written by training, or an .onnx from pytorch.export"
    )
    parser.add_argument("audio", nargs="+", type=Path, metavar="AUDIO", help="audio files to transcribe")
    parser.add_argument(
        "--precision", choices=params.choices("precision"), help="autocast (default: the checkpoint's; fp16 needs CUDA)"
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="default: cuda if available"
    )
    parser.add_argument(
        "--timestamps",
        action="store_true",
        help="print one JSON object per file: transcript and each word's start and end (s), by forced alignment",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="FILE.png",
        help="draw the spectrogram, the label posteriors and the word boundaries (one AUDIO file only)",
    )
    parser.add_argument(
        "--stream",
        action="store_true",
        help="stream each file in --chunk-ms chunks (a unidirectional normalization=global model, greedy, torch "
        "backend): partial transcripts on stderr as the audio arrives, the final line on stdout (pytorch.streaming)",
    )
    parser.add_argument(
        "--chunk-ms", type=float, default=100.0, help="with --stream: milliseconds of audio per chunk (default 100)"
    )
    backends.add_argument(parser)
    decoders.add_arguments(parser)
    return parser.parse_args(argv)


def check_usage(args) -> decoders.DecoderConfig:
    """The decoder asked for; UsageError naming the option that does not fit."""
    config = decoders.config_from_args(args)
    if args.plot is not None:
        if len(args.audio) != 1:
            raise exit_status.UsageError(f"--plot {args.plot}: draws one file; {len(args.audio)} AUDIO files given")
        if args.plot.suffix.lower() != ".png":
            raise exit_status.UsageError(f"--plot {args.plot}: must name a .png file")
    if args.stream:
        streaming.check_options(args.backend, config.kind, args.timestamps or args.plot is not None)
    return config


def run(args) -> ExitStatus:
    config = check_usage(args)
    model = backends.load(args.checkpoint, args.backend, args.device, args.precision)
    p = model.p
    if args.stream:
        return streaming.transcribe_files(model.model, p, args.audio, args.chunk_ms, read_audio, (AudioError,))
    decoder = decoders.make_decoder(config)
    clock = align.FrameClock.of(p)
    status = ExitStatus.OK
    for path in args.audio:
        try:
            features = features_of(path, p, model.feature_stats())
            if not (args.timestamps or args.plot):
                print(f"{path}\t{transcribe(model, features, args.device, decoder)}", flush=True)
                continue
            log_probs = log_probs_of(model, features, args.device)
            audio_s = (features.shape[1] - 1) * clock.hop_s  # T = 1 + samples // hop (centred frames)
            text, alignment, words = timed_transcript(log_probs, decoder, clock, audio_s)
        except (AudioError, align.AlignmentError) as err:
            exit_status.error(f"{err}" if isinstance(err, AudioError) else f"{path}: {err}")
            status = ExitStatus.ERROR
            continue
        if args.timestamps:
            record = {"file": str(path), "transcript": text, "words": [w.as_json() for w in words]}
            print(json.dumps(record), flush=True)
        else:
            print(f"{path}\t{text}", flush=True)
        if args.plot:
            title = f"{path.name}: {text}"
            alignment_plot.plot_alignment(args.plot, features, log_probs, alignment, words, clock, title)
            print(f"plot: {args.plot}", file=sys.stderr)
    return status


def main(argv=None) -> int:
    args = parse_args(argv)
    return exit_status.run(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
