"""Feature normalisation, the one definition: per utterance (the benchmark's) or global.

    utterance: (x - m) / s with ONE scalar mean m and std s over the whole (F, T) utterance, as the
               2018 reference did. A stream cannot know them before it ends.
    global:    (x - mean[f]) / std[f] per feature bin, the statistics of the training split's stored
               features; each frame is normalised on its own, so a stream can do it as frames arrive.

Stored shards stay unnormalised (data.features). For `global`, data.prepare records per subset what
combines exactly into any union of subsets: the frame count and the per-bin sum and sum of squares
of the stored (float16) features in float64 (`FeatureSums`, features/<subset>/statistics.json, whose
path data.dataset_dir owns); a split's `FeatureStats` is derived from its subsets' sums. A trained
model carries its FeatureStats in the checkpoint (pytorch.model), so inference needs no data.
"""

import json
import math
from dataclasses import dataclass

import numpy as np
import torch

from data.dataset_dir import DatasetDir, DatasetError, feature_sums_of
from data.files import write_atomically
from data.librispeech import SPLITS

MIN_STD = 1e-5  # floor of the normalising std, so a silent (constant) input gives zeros, not NaN


class NormalizationError(DatasetError):
    """Feature statistics that are missing or malformed; the message names the file and what to do."""


@dataclass(frozen=True)
class FeatureStats:
    """Per-bin mean and std (both (F,) float32 tensors on the CPU; std already floored at MIN_STD)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __post_init__(self):
        if self.mean.dim() != 1 or self.mean.shape != self.std.shape:
            raise ValueError(f"feature stats: mean {tuple(self.mean.shape)} and std {tuple(self.std.shape)}: need (F,)")

    @property
    def n_features(self) -> int:
        return self.mean.shape[0]

    def to_json(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_json(cls, data) -> "FeatureStats":
        """ValueError naming what is wrong unless `data` is {"mean": [F floats], "std": [F floats > 0]}."""
        try:
            mean = torch.tensor(data["mean"], dtype=torch.float32)
            std = torch.tensor(data["std"], dtype=torch.float32)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"feature stats: expected {{'mean': [...], 'std': [...]}} of numbers ({err})") from None
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise ValueError("feature stats: mean and std must be finite and std positive")
        return cls(mean, std)


def normalise(features: torch.Tensor, stats: FeatureStats | None) -> torch.Tensor:
    """features (F, T) float32 -> (F, T): per utterance when stats is None, else per bin by `stats`.

    Utterance: one scalar mean and std over all of (F, T), the std floored at MIN_STD.
    Global: (x - mean[f]) / std[f]; every frame independent of the others (what streaming relies on).
    """
    if stats is None:
        return (features - features.mean()) / features.std().clamp(min=MIN_STD)
    if features.shape[0] != stats.n_features:
        raise ValueError(f"features of {features.shape[0]} bins, but the feature stats have {stats.n_features}")
    mean, std = stats.mean.to(features.device), stats.std.to(features.device)
    return (features - mean[:, None]) / std[:, None]


@dataclass
class FeatureSums:
    """What combines exactly over subsets: frames, per-bin sum and sum of squares (float64 (F,))."""

    frames: int
    sum: np.ndarray
    squares: np.ndarray

    @classmethod
    def of(cls, frames: np.ndarray) -> "FeatureSums":
        """Of stored frames (T, F), any float dtype, summed in float64."""
        wide = frames.astype(np.float64)
        return cls(int(wide.shape[0]), wide.sum(axis=0), np.square(wide).sum(axis=0))

    @classmethod
    def zeros(cls, n_features: int) -> "FeatureSums":
        return cls(0, np.zeros(n_features), np.zeros(n_features))

    def __add__(self, other: "FeatureSums") -> "FeatureSums":
        return FeatureSums(self.frames + other.frames, self.sum + other.sum, self.squares + other.squares)

    def stats(self) -> FeatureStats:
        """The population mean and std per bin (std floored at MIN_STD); ValueError without frames."""
        if self.frames == 0:
            raise ValueError("feature sums of 0 frames: no statistics")
        mean = self.sum / self.frames
        var = np.maximum(self.squares / self.frames - mean * mean, 0.0)
        std = np.maximum(np.sqrt(var), MIN_STD)
        return FeatureStats(torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(std.astype(np.float32)))

    def to_json(self) -> dict:
        return {"frames": self.frames, "sum": self.sum.tolist(), "squares": self.squares.tolist()}

    @classmethod
    def from_json(cls, data) -> "FeatureSums":
        try:
            frames, total, squares = int(data["frames"]), np.array(data["sum"], float), np.array(data["squares"], float)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"expected {{'frames', 'sum', 'squares'}} ({err})") from None
        if frames < 0 or total.ndim != 1 or total.shape != squares.shape or not np.isfinite(total + squares).all():
            raise ValueError("frames must be >= 0 and sum, squares finite lists of equal length")
        return cls(frames, total, squares)


def sums_text(sums: FeatureSums) -> str:
    # repr-exact floats (json writes the shortest round-tripping form): the sums combine exactly.
    return json.dumps(sums.to_json()) + "\n"


def write_sums(dataset: DatasetDir, subset: str, sums: FeatureSums) -> str:
    """Record a subset's sums; returns the file's path relative to the dataset (for its checksums)."""
    write_atomically(dataset.feature_sums(subset), sums_text(sums))
    return feature_sums_of(subset)


def read_sums(dataset: DatasetDir, subset: str) -> FeatureSums:
    """A subset's recorded sums; NormalizationError naming the file and the fix if missing or malformed."""
    path = dataset.feature_sums(subset)
    try:
        return FeatureSums.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise NormalizationError(
            f"{path}: missing: subset {subset} was prepared without feature statistics (before they were "
            f"recorded), and normalization=global needs them; prepare it again with "
            f"python -m data.prepare --force --subsets {subset} (normalization=utterance needs none)"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as err:
        raise NormalizationError(f"{path}: not valid feature statistics ({err}); prepare the subset again") from None


def sources_of(dataset: DatasetDir, name: str) -> list[str]:
    """The subsets whose sums make manifest `name`'s statistics: a split's prepared subsets, or a subset itself."""
    if name in SPLITS:
        from data.manifest import split_sources  # noqa: PLC0415 (numpy-heavy; only splits need it)

        return split_sources(dataset, name)
    return [name]


def split_stats(data_dir, name: str) -> FeatureStats:
    """FeatureStats of manifest `name` (a split: the union of its prepared subsets; or one subset)."""
    dataset = DatasetDir(data_dir)
    subsets = sources_of(dataset, name)
    if not subsets:
        raise NormalizationError(f"{dataset.manifest(name)}: split {name} has no prepared subset to take statistics of")
    total = None
    for subset in subsets:
        sums = read_sums(dataset, subset)
        total = sums if total is None else total + sums
    if total.frames == 0 or not math.isfinite(float(total.squares.sum())):
        raise NormalizationError(f"{dataset.feature_sums(subsets[0])}: the statistics of {name} hold no frames")
    return total.stats()
