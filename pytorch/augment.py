"""Training augmentation of one utterance's STORED features: gain, tempo and SpecAugment masks.

The stored features are log1p |STFT| (data.features.extract; with feature=mfcc, MFCCs), here as
(F, T) = (bins, frames) float32. The loader (pytorch.loader.UtteranceDataset) applies, to training
items only:

    stored (F, T) --gain--> (F, T) --tempo--> (F, T') --normalise--> --masks--> (F, T') to the model

Why the stored features and not the audio, as the 2018 reference did with sox: the trainer never
opens audio (the manifest and the feature shards are its contract, ARCHITECTURE.md), decoding and
re-extracting every utterance every epoch would cost the loader an STFT per item, and on these
features a gain is exact (|STFT| is linear in the waveform; on MFCCs it moves c0 alone) while a
tempo change (sox `tempo`: duration changes, pitch does not) is close to a resampling of the frames
along time: bench/augment_fidelity.py measures how close against sox (docs/performance.md, Augmentation fidelity).

Why this order: gain and tempo change the signal, so they come before the per-utterance
normalisation, which then sees the changed utterance as it would have seen the changed audio.
SpecAugment's masks come after it, with the value 0 = the utterance's mean (Park et al. 2019 mask
normalised features with 0 for that reason): masking first would pull the mean and std towards the
mask value and rescale every unmasked frame.

Determinism: every draw comes from np.random.default_rng([seed, epoch, crc32(utterance id), kind]),
never from a global generator, so a DataLoader worker, another rank or a resumed run sees exactly
what an unbroken single-process run sees. The id, not the row index, names the utterance: rows are
renumbered when max_duration leaves some out. One generator per kind of draw keeps turning one
augmentation on or off from changing the others' draws.
"""

import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from params import Params

TEMPO, GAIN, MASKS = range(3)  # the `kind` of a generator: one stream of draws per augmentation
# A time mask covers at most this share of the utterance: Park et al.'s SM and SS policies use p = 0.2
# (their LD policy, p = 1.0, was for LibriSpeech's ~12 s utterances, where 100 frames is 8%); with
# p = 1.0 two 100-frame masks could blank most of a 2 s utterance and the words its transcript needs.
MAX_TIME_MASK_FRACTION = 0.2


def generator(seed: int, epoch: int, utterance_id: str, kind: int) -> np.random.Generator:
    """The generator of one kind of draw for one utterance in one epoch of one run (seeded, stable
    across processes: crc32 of the id, not Python's salted hash())."""
    return np.random.default_rng([seed, epoch, zlib.crc32(utterance_id.encode()), kind])


# ---------------------------------------------------------------- gain


def amplitude(db: float) -> float:
    """The waveform factor of a gain of `db` decibels (20 log10 of an amplitude ratio)."""
    return 10.0 ** (db / 20.0)


def gain(features: torch.Tensor, db: float) -> torch.Tensor:
    """(F, T) log1p magnitudes -> (F, T): the features of the waveform scaled by amplitude(db).

    Exact, and never clipped (sox clips at full scale): every |STFT| value scales by the same factor.
    """
    # A magnitude is never negative; the clamp keeps frames that are no log1p magnitudes finite.
    return torch.expm1(features).clamp_(min=0).mul_(amplitude(db)).log1p_()  # in place on expm1's new tensor


def mfcc_gain(features: torch.Tensor, db: float, n_mels: int) -> torch.Tensor:
    """(n_mfcc, T) MFCCs (feature=mfcc) -> (n_mfcc, T): those of the waveform scaled by amplitude(db).

    Every mel band's power in dB rises by db (so does the 80 dB floor, relative to the peak), and
    an orthonormal DCT-II turns a constant added to all n_mels bands into db * sqrt(n_mels) on c0
    alone. Exact while the bands stay above the 1e-10 power floor (-100 dB).
    """
    shifted = features.clone()
    shifted[0] += db * math.sqrt(n_mels)
    return shifted


# ---------------------------------------------------------------- tempo


def stretched_frames(frames: int, factor: float) -> int:
    """Frames of a T-frame utterance played `factor` times as fast: round(T / factor), at least 1.

    Never above ceil(T / tempo_low) for factor >= tempo_low: the bound pytorch.train's memory check
    sizes the longest micro-batch by.
    """
    return max(1, round(frames / factor))


def resample_frames(values: torch.Tensor, frames: int, factor: float, start: float = 0.0) -> torch.Tensor:
    """(F, T) -> (F, frames) by linear interpolation along time.

    Output frame j is centred at output time j * hop, which a tempo change of `factor` maps to input
    time j * hop * factor: input position start + j * factor (held at the first and last frames beyond
    them). `start` (frames) only lets bench/augment_fidelity.py take out sox's latency.
    """
    last = values.shape[1] - 1
    position = (start + torch.arange(frames, dtype=torch.float64) * factor).clamp(0, last)
    left = position.floor().long()
    right = (left + 1).clamp(max=last)
    weight = (position - left).to(values.dtype)
    return torch.lerp(values.index_select(1, left), values.index_select(1, right), weight)


def tempo(features: torch.Tensor, factor: float) -> torch.Tensor:
    """(F, T) stored features -> (F, stretched_frames(T, factor)): the utterance `factor` times as fast.

    Interpolates the log1p values themselves: bench/augment_fidelity.py measured them as close to
    sox's tempo as interpolated magnitudes (the same relative error to 0.001) at a third of the
    cost, and log-domain frames of any kind (MFCCs too) resample the same way.
    """
    return resample_frames(features, stretched_frames(features.shape[1], factor), factor)


# ---------------------------------------------------------------- SpecAugment


def mask(
    normalised: torch.Tensor,
    rng: np.random.Generator,
    freq_masks: int,
    freq_mask_width: int,
    time_masks: int,
    time_mask_width: int,
) -> torch.Tensor:
    """(F, T) normalised features -> (F, T) with SpecAugment's masks (Park et al. 2019) set to 0 = the mean.

    freq_masks bands of a width uniform in [0, freq_mask_width] bins and time_masks spans of a width
    uniform in [0, min(time_mask_width, MAX_TIME_MASK_FRACTION * T)] frames, each at a uniform start.
    """
    masked = normalised.clone()
    bins, frames = masked.shape
    for _ in range(freq_masks):
        width = int(rng.integers(0, min(freq_mask_width, bins), endpoint=True))
        start = int(rng.integers(0, bins - width, endpoint=True))
        masked[start : start + width, :] = 0
    widest = min(time_mask_width, math.floor(MAX_TIME_MASK_FRACTION * frames))
    for _ in range(time_masks):
        width = int(rng.integers(0, widest, endpoint=True))
        start = int(rng.integers(0, frames - width, endpoint=True))
        masked[:, start : start + width] = 0
    return masked


# ---------------------------------------------------------------- the configuration


@dataclass(frozen=True)
class Augmentation:
    """What to do to every training utterance, from the params' augmentation group (see params.py)."""

    seed: int
    n_mels: int = 0  # feature=mfcc: mel bands under the cepstrum; 0: the features are log1p magnitudes
    tempo_range: tuple[float, float] | None = None  # factors; None: no tempo change
    gain_range_db: tuple[float, float] | None = None  # decibels; None: no gain
    freq_masks: int = 0
    freq_mask_width: int = 0
    time_masks: int = 0
    time_mask_width: int = 0

    @classmethod
    def from_params(cls, p: Params) -> "Augmentation | None":
        """The run's augmentation, or None when every augmentation knob is off."""
        if not (p.tempo_perturb or p.gain_perturb or p.spec_augment):
            return None
        masks = (p.freq_masks, p.freq_mask_width, p.time_masks, p.time_mask_width) if p.spec_augment else (0,) * 4
        return cls(
            seed=p.seed,
            n_mels=p.n_mels if p.feature == "mfcc" else 0,
            tempo_range=(p.tempo_low, p.tempo_high) if p.tempo_perturb else None,
            gain_range_db=(p.gain_low_db, p.gain_high_db) if p.gain_perturb else None,
            freq_masks=masks[0],
            freq_mask_width=masks[1],
            time_masks=masks[2],
            time_mask_width=masks[3],
        )

    def before_normalising(self, features: torch.Tensor, utterance_id: str, epoch: int) -> torch.Tensor:
        """(F, T) stored features -> (F, T'): gain, then tempo, each with this utterance's draw for this epoch."""
        if self.gain_range_db is not None:
            db = generator(self.seed, epoch, utterance_id, GAIN).uniform(*self.gain_range_db)
            features = mfcc_gain(features, db, self.n_mels) if self.n_mels else gain(features, db)
        if self.tempo_range is not None:
            factor = generator(self.seed, epoch, utterance_id, TEMPO).uniform(*self.tempo_range)
            features = tempo(features, factor)
        return features

    def after_normalising(self, normalised: torch.Tensor, utterance_id: str, epoch: int) -> torch.Tensor:
        """(F, T) normalised features -> (F, T) with this utterance's SpecAugment masks for this epoch."""
        if not (self.freq_masks or self.time_masks):
            return normalised
        rng = generator(self.seed, epoch, utterance_id, MASKS)
        return mask(normalised, rng, self.freq_masks, self.freq_mask_width, self.time_masks, self.time_mask_width)
