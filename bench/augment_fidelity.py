"""How close the feature-domain augmentation (pytorch.augment) is to the audio-domain one (sox).

On a few espeak-ng utterances (synthetic.corpus), for each tempo factor F, the reference is
`sox in.wav out.wav tempo F` (the 2018 reference's effect) then data.features.extract, compared with
  ours, as trained      pytorch.augment.tempo on the features of in.wav (log1p values interpolated)
  ours, aligned         the same, started at the input frame (in STARTS) that fits sox best: sox's
                        output lags by a few ms that depend on F (its WSOLA segments), which a
                        model trained with CTC cannot tell from a pause
  magnitudes, aligned   the magnitudes (expm1) interpolated instead of the log1p values
  sox -s                sox's own speech-tuned variant `tempo -s F`, at its best whole-frame lag:
                        how far two audio-domain tempo changes differ
  sox, half a hop later sox on in.wav delayed by half a hop: what framing alone changes
  unchanged             the features of in.wav as they are, at their best lag: ignoring the tempo
over the frames both have: relative error mean |d log1p| / mean |log1p(sox)| and the correlation
of the two spectrograms. The last three are the scale: a method as close as `sox -s` is as good as
another audio-domain implementation of the same effect.

Gain: pytorch.augment.gain vs `sox in.wav out.wav gain dB`, max |d log1p| in float32 and after
float16 storage rounding of both (what the shards hold). Audio is written as 32-bit float WAV, so
neither quantisation nor dither enters, at a peak of -12 dBFS so that +8 dB does not clip (sox clips
at full scale; the feature-domain gain never does).

    python -m bench.augment_fidelity                        # 161 bins, 8 utterances
    python -m bench.augment_fidelity --utterances 3 preset=demo
Exit status 1 when sox or espeak-ng is missing.
"""

import argparse
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

import exit_status
import params
from data.features import extract
from pytorch import augment

SOX = "sox"
TEMPOS = (0.85, 0.9, 1.1, 1.15)
GAINS_DB = (-6.0, -3.0, 3.0, 8.0)
MAX_LAG = 3  # frames: audio-domain results are compared at their best whole-frame lag
LAGS = range(-MAX_LAG, MAX_LAG + 1)
STARTS = np.arange(-2.0, 2.01, 0.25)  # input frames: where the aligned resampling may start
PEAK = 10 ** (-12 / 20)  # -12 dBFS: room for the reference's +8 dB without clipping
SAMPLE_RATE = 16000


class MissingTool(exit_status.Failure):
    """sox or espeak-ng is not installed."""


def speech(count: int, seed: int, work: Path) -> list[np.ndarray]:
    """`count` espeak-ng utterances (S,) float32 scaled to PEAK: the demo corpus's voices and speeds
    (synthetic.corpus), read back from the FLACs of the archive it writes."""
    from synthetic import corpus

    try:
        (archive,) = corpus.synthesize(work / "corpus", {"train-clean-100": count}, seed, jobs=1)
    except corpus.SynthesisError as err:
        raise MissingTool(f"cannot synthesise speech: {err}") from None
    audio = []
    with tarfile.open(archive) as tar:
        for member in sorted(m.name for m in tar.getmembers() if m.name.endswith(".flac")):
            samples = sf.read(io.BytesIO(tar.extractfile(member).read()), dtype="float32")[0]
            audio.append(samples * (PEAK / np.abs(samples).max()))
    return audio


def sox(audio: np.ndarray, effect: list[str], work: Path) -> np.ndarray:
    """(S,) -> (S',): `sox in.wav out.wav EFFECT...` on 32-bit float WAV (no quantisation, no dither)."""
    source, target = work / "in.wav", work / "out.wav"
    sf.write(source, audio, SAMPLE_RATE, subtype="FLOAT")
    done = subprocess.run(
        [SOX, "-D", str(source), "-e", "floating-point", "-b", "32", str(target), *effect],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise exit_status.Failure(f"sox {' '.join(effect)} failed: {done.stderr.strip()}")
    return sf.read(target, dtype="float32")[0]


def features_of(audio: np.ndarray, p: params.Params) -> torch.Tensor:
    """(S,) -> (F, T) stored features, as the loader sees them."""
    return extract(torch.from_numpy(audio), p).T.contiguous()


def resampled(features: torch.Tensor, factor: float, start: float, log_domain: bool) -> torch.Tensor:
    """pytorch.augment.tempo (log1p values interpolated) started at input frame `start`; without
    log_domain: the magnitudes (expm1) interpolated instead."""
    frames = augment.stretched_frames(features.shape[1], factor)
    if log_domain:
        return augment.resample_frames(features, frames, factor, start)
    return torch.log1p(augment.resample_frames(torch.expm1(features), frames, factor, start))


def closeness(ours: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(relative error, correlation) over the frames both (F, T) spectrograms have."""
    frames = min(ours.shape[1], reference.shape[1])
    a, b = ours[:, :frames].double(), reference[:, :frames].double()
    relative = float((a - b).abs().mean() / b.abs().mean())
    correlation = float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])
    return relative, correlation


def best_lag(candidate: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """closeness at the whole-frame lag in [-MAX_LAG, MAX_LAG] that minimises the relative error."""
    shifted = [(candidate[:, lag:], reference) if lag >= 0 else (candidate, reference[:, -lag:]) for lag in LAGS]
    return min(closeness(a, b) for a, b in shifted)


def best_start(features: torch.Tensor, factor: float, reference: torch.Tensor, log_domain: bool):
    """closeness of the resampling started at the input frame in STARTS that minimises the relative
    error: sox's output lags its input by a few frames that depend on the factor (WSOLA segments)."""
    return min(closeness(resampled(features, factor, s, log_domain), reference) for s in STARTS)


METHODS = ("ours, as trained", "ours, aligned", "magnitudes, aligned", "sox -s", "sox, half a hop later", "unchanged")


def tempo_scores(audio: np.ndarray, factor: float, p: params.Params, work: Path) -> dict[str, tuple[float, float]]:
    """{method: (relative error, correlation)} against `sox tempo factor` for one utterance (S,)."""
    original = features_of(audio, p)
    reference = features_of(sox(audio, ["tempo", f"{factor}"], work), p)
    delayed = np.concatenate([np.zeros(p.hop_length // 2, np.float32), audio])
    return dict(
        zip(
            METHODS,
            (
                closeness(augment.tempo(original, factor), reference),
                best_start(original, factor, reference, log_domain=True),
                best_start(original, factor, reference, log_domain=False),
                best_lag(features_of(sox(audio, ["tempo", "-s", f"{factor}"], work), p), reference),
                closeness(features_of(sox(delayed, ["tempo", f"{factor}"], work), p), reference),
                best_lag(original, reference),
            ),
        )
    )


def tempo_table(audio: list[np.ndarray], p: params.Params, work: Path) -> list[str]:
    lines = ["| tempo | " + " | ".join(METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    for factor in TEMPOS:
        scores = [tempo_scores(a, factor, p, work) for a in audio]
        mean = {m: np.mean([s[m] for s in scores], axis=0) for m in METHODS}
        lines.append(f"| {factor} | " + " | ".join(f"{mean[m][0]:.3f} / {mean[m][1]:.3f}" for m in METHODS) + " |")
    lines.append("(each cell: relative error / correlation against `sox tempo F`, mean over the utterances)")
    return lines


def gain_table(audio: list[np.ndarray], p: params.Params, work: Path) -> list[str]:
    lines = [
        "| gain (dB) | max abs error, float32 | max abs error, float16 storage | float16 step at the largest value |",
        "|---|---|---|---|",
    ]
    for db in GAINS_DB:
        exact, stored, step = 0.0, 0.0, 0.0
        for a in audio:
            original = features_of(a, p)
            reference = features_of(sox(a, ["gain", f"{db}"], work), p)
            exact = max(exact, float((augment.gain(original, db) - reference).abs().max()))
            from_shard = augment.gain(original.half().float(), db)  # what the loader computes from a shard
            stored = max(stored, float((from_shard - reference.half().float()).abs().max()))
            step = max(step, float(np.spacing(np.float16(reference.max()))))
        lines.append(f"| {db:+g} | {exact:.2e} | {stored:.2e} | {step:.2e} |")
    return lines


def run(args) -> None:
    if shutil.which(SOX) is None:
        raise MissingTool(f"{SOX} is not installed: run `make setup` or `apt-get install sox`")
    p = params.parse(args.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        audio = speech(args.utterances, args.seed, work)
        seconds = sum(len(a) for a in audio) / SAMPLE_RATE
        print(f"{len(audio)} espeak-ng utterances, {seconds:.1f} s of audio, {p.n_features} bins")
        print("\n".join(["", *tempo_table(audio, p, work), "", *gain_table(audio, p, work)]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.augment_fidelity",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--utterances", type=int, default=8, help="espeak-ng utterances (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="which utterances (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="feature parameters, e.g. preset=demo")
    args = parser.parse_intermixed_args(argv)
    if args.utterances < 1:
        parser.error("--utterances must be >= 1")
    return exit_status.run(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
