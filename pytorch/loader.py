"""Manifests -> length-ordered, padded batches, and how a global batch is split across processes.

Batches are consecutive runs of the manifest (ascending duration), so each holds utterances of
similar length and little padding; shuffling permutes only the ORDER of the batches. A global batch
is cut into world_size * accumulation_steps contiguous micro-batches in one fixed order, so the
same utterances meet in the same micro-batch whatever the mix of processes and accumulation steps.

Everything per utterance that the training step needs is computed here, on the CPU, in the loader's
worker processes: the training augmentation (pytorch.augment), padded features, lengths (after any
tempo change), encoded transcripts, and which utterances CTC can align at all (a training batch
leaves the others out and counts them), so the step never asks the GPU.
"""

import functools
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data import labels
from data.dataset_dir import DatasetDir, DatasetError
from data.dataset_dir import default_data_dir as default_data_dir  # re-exported: the trainer's --data-dir default
from data.manifest import Manifest
from data.normalization import FeatureStats, normalise, split_stats
from params import Params
from pytorch.augment import Augmentation
from pytorch.distributed import World
from pytorch.model import output_lengths

OPEN_SHARDS = 256  # memory maps kept open per process; each holds a file descriptor
CHARS_PER_SECOND = 15  # about LibriSpeech's speaking rate


class LoaderError(DatasetError):
    """A feature shard or transcript that cannot be loaded as its manifest row says."""


def manifest_path(data_dir, name: str) -> Path:
    """data_dir/manifests/<name>.jsonl; DatasetError if it does not exist."""
    return DatasetDir(data_dir).existing_manifest(name)


def read_manifest(path) -> list[dict]:
    """The rows of a manifest as dicts, in file order (for small manifests: a dict per row is what
    Manifest avoids); ManifestError naming file and line on a bad row."""
    manifest = Manifest.read(path)
    return [manifest.row(i) for i in range(len(manifest))]


def check_features(data_dir, p: Params) -> None:
    """FeatureConfigError naming the differing keys unless features/features.json equals p.feature_config()."""
    DatasetDir(data_dir).check_feature_config(
        p.feature_config(), advice="re-run data preparation with these parameters or train with the data's"
    )


class Utterance(NamedTuple):
    features: torch.Tensor  # (F, T) float32, normalised
    labels: torch.Tensor  # (L,) int64
    id: str
    transcript: str


class UtteranceDataset(Dataset):
    """Key (i, epoch) -> Utterance of manifest row i.

    Features are normalised by the utterance's single mean and std, as the reference did, or with
    `stats` (normalization=global: the training set's per-bin statistics) by those.
    Transcripts are encoded once here, so a bad character fails before training starts.
    With an augmentation (a training split), a key with an epoch gets that epoch's augmented
    features; epoch None (evaluation) always gets the features as stored.
    """

    def __init__(
        self, data_dir, manifest: Manifest, augmentation: Augmentation | None = None, stats: FeatureStats | None = None
    ):
        self.data_dir = Path(data_dir)
        self.manifest = manifest
        self.augmentation = augmentation
        self.stats = stats
        self._check_transcripts()
        self._shards: OrderedDict[int, np.ndarray] = OrderedDict()
        self._pid = os.getpid()

    def _check_transcripts(self) -> None:
        """LoaderError naming the first utterance whose transcript holds a character that is no label."""
        unknown = np.flatnonzero(labels.encode_bytes(self.manifest.transcripts.chars) < 0)
        if len(unknown):
            i = int(np.searchsorted(self.manifest.transcripts.offsets, unknown[0], side="right")) - 1
            try:
                labels.encode(self.manifest.transcript(i))
            except labels.UnknownCharacter as err:
                raise LoaderError(f"utterance {self.manifest.id(i)}: {err}") from None

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, key: tuple[int, int | None]) -> Utterance:
        i, epoch = key
        frames = self._frames(i)
        # The (T, F) float16 slice copied as stored, then widened and transposed by torch: about 3x
        # faster than numpy's strided float16 -> float32 transpose, the largest cost of an item.
        features = torch.from_numpy(np.array(frames)).float().T.contiguous()
        utterance_id = self.manifest.id(i)
        augment = self.augmentation is not None and epoch is not None
        if augment:
            features = self.augmentation.before_normalising(features, utterance_id, epoch)
        features = normalise(features, self.stats)
        if augment:
            features = self.augmentation.after_normalising(features, utterance_id, epoch)
        # Labels from the manifest's flat transcript bytes, per item: no per-row object to copy on access.
        encoded = torch.from_numpy(labels.encode_bytes(self.manifest.transcripts.codes(i)).astype(np.int64))
        return Utterance(features, encoded, utterance_id, self.manifest.transcript(i))

    def _frames(self, i: int) -> np.ndarray:
        """The utterance's (T, F) slice of its shard, checked against the manifest."""
        shard = self._shard(int(self.manifest.shard[i]))
        start, count = int(self.manifest.offset[i]), int(self.manifest.frames[i])
        if shard.ndim != 2 or start + count > shard.shape[0] or count == 0:
            relative = self.manifest.shards[self.manifest.shard[i]]
            raise LoaderError(
                f"utterance {self.manifest.id(i)}: frames [{start}, {start + count}) not in "
                f"{self.data_dir / relative} of shape {shard.shape}; the data is damaged or stale, run data.verify"
            )
        return shard[start : start + count]

    def _shard(self, index: int) -> np.ndarray:
        """Memory-mapped shard, cached per process (a forked worker must not reuse its parent's maps)."""
        if self._pid != os.getpid():
            self._shards, self._pid = OrderedDict(), os.getpid()
        shard = self._shards.get(index)
        if shard is None:
            path = self.data_dir / self.manifest.shards[index]
            try:
                shard = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as err:
                raise LoaderError(f"{path}: cannot read feature shard ({err})") from None
            self._shards[index] = shard
            if len(self._shards) > OPEN_SHARDS:
                self._shards.popitem(last=False)
        else:
            self._shards.move_to_end(index)
        return shard

    def __getstate__(self) -> dict:
        # Workers open their own maps; pickling the open ones would copy whole shards.
        return self.__dict__ | {"_shards": OrderedDict()}


@dataclass
class Split:
    """One manifest of the prepared dataset, ready to load."""

    name: str
    manifest: Manifest
    dataset: UtteranceDataset

    def __len__(self) -> int:
        return len(self.manifest)


def open_split(
    data_dir,
    name: str,
    max_duration: float = 0.0,
    augmentation: Augmentation | None = None,
    stats: FeatureStats | None = None,
) -> Split:
    """manifests/<name>.jsonl as a Split, optionally without its utterances longer than max_duration s,
    with an augmentation of its training items (keys with an epoch), and normalised by `stats`
    (None: per utterance; a normalization=global model's evaluation passes model.feature_stats())."""
    path = manifest_path(data_dir, name)
    manifest = Manifest.read(path)
    if max_duration > 0:
        manifest = manifest.select(np.flatnonzero(manifest.duration <= max_duration))
    if len(manifest) == 0:
        limit = f" of at most max_duration={max_duration} s" if max_duration > 0 else ""
        raise LoaderError(f"{path}: no utterances{limit}")
    return Split(name, manifest, UtteranceDataset(data_dir, manifest, augmentation, stats))


def open_training_split(data_dir, p: Params) -> Split:
    """The run's training split: p.train_manifest without utterances over p.max_duration, augmented as p says,
    normalised as p.normalization says (global: the split's recorded statistics, data.normalization)."""
    stats = split_stats(data_dir, p.train_manifest) if p.normalization == "global" else None
    return open_split(data_dir, p.train_manifest, p.max_duration, Augmentation.from_params(p), stats)


def global_batches(n_rows: int, batch_size: int, shuffle: bool, seed: int, epoch: int) -> list[list[int]]:
    """Consecutive chunks of batch_size row indices (the last may be smaller).

    With shuffle, the order of the chunks is permuted by a generator seeded by (seed, epoch);
    each chunk keeps its utterances of similar length.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be at least 1")
    batches = [list(range(start, min(start + batch_size, n_rows))) for start in range(0, n_rows, batch_size)]
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(len(batches))
        batches = [batches[i] for i in order]
    return batches


def split_evenly(global_batch: list[int], parts: int) -> list[list[int]]:
    """`parts` contiguous parts whose sizes differ by at most one (larger ones first); some may be empty."""
    size, extra = divmod(len(global_batch), parts)
    bounds = [m * size + min(m, extra) for m in range(parts + 1)]
    return [global_batch[bounds[m] : bounds[m + 1]] for m in range(parts)]


def micro_batches(global_batch: list[int], world_size: int, accumulation_steps: int, rank: int) -> list[list[int]]:
    """This rank's micro-batch for each accumulation step.

    The global batch is cut into world_size * accumulation_steps parts (split_evenly); step s of
    rank r takes part s * world_size + r. Parts may be empty when the batch is smaller than the
    number of parts.
    """
    if world_size < 1 or accumulation_steps < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"world_size={world_size}, accumulation_steps={accumulation_steps}, rank={rank}: "
            "need world_size >= 1, accumulation_steps >= 1 and 0 <= rank < world_size"
        )
    parts = split_evenly(global_batch, world_size * accumulation_steps)
    return [parts[s * world_size + rank] for s in range(accumulation_steps)]


def min_ctc_frames(labels_: torch.Tensor) -> int:
    """Fewest output frames CTC needs to emit this transcript: its length plus a blank between repeats."""
    return len(labels_) + int((labels_[1:] == labels_[:-1]).sum())


@dataclass
class Batch:
    """A padded batch, as the model and CTC take it. Tensors on the CPU until the step moves them."""

    features: torch.Tensor  # (N, F, T) float32, zero beyond each length
    lengths: torch.Tensor  # (N,) int64 frames
    targets: torch.Tensor  # (sum L,) int64: the transcripts' labels, concatenated
    target_lengths: torch.Tensor  # (N,) int64
    ids: list[str]
    transcripts: list[str]
    dropped: int = 0  # utterances left out because CTC cannot align them (training batches)

    def __len__(self) -> int:
        return len(self.ids)

    def pin_memory(self) -> "Batch":
        """DataLoader(pin_memory=True) calls this: page-locked tensors copy to a GPU without a sync."""
        tensors = {
            name: getattr(self, name).pin_memory() for name in ("features", "lengths", "targets", "target_lengths")
        }
        return Batch(**tensors, ids=self.ids, transcripts=self.transcripts, dropped=self.dropped)

    @classmethod
    def empty(cls, dropped: int = 0) -> "Batch":
        """No utterance (N = 0): a rank's share of a short tail batch, or all of it dropped."""
        none = torch.zeros(0, dtype=torch.long)
        return cls(torch.zeros(0, 0, 0), none, none.clone(), none.clone(), [], [], dropped)

    @classmethod
    def synthetic(cls, n: int, n_features: int, frames: int, generator: torch.Generator) -> "Batch":
        """n random utterances of `frames` frames with transcripts of a realistic length (about 15
        characters a second, as LibriSpeech's speakers), all alignable: for benchmarks and memory checks."""
        out = int(output_lengths(torch.tensor([frames]))[0])
        length = max(1, min(round(frames / 100 * CHARS_PER_SECOND), out // 2))
        targets = torch.randint(1, len(labels.LABELS), (n * length,), generator=generator)
        return cls(
            torch.randn(n, n_features, frames, generator=generator),
            torch.full((n,), frames),
            targets,
            torch.full((n,), length),
            [f"synthetic-{i}" for i in range(n)],
            ["" for _ in range(n)],
        )


def collate(items: list[Utterance], training: bool = False) -> Batch:
    """Utterances -> Batch, zero-padded to the longest. training: leave out (and count) the
    utterances whose output would be shorter than their transcript needs (CTC: infinite loss)."""
    dropped = 0
    if training:
        alignable = [
            u
            for u in items
            if int(output_lengths(torch.tensor(u.features.shape[1]))) >= max(1, min_ctc_frames(u.labels))
        ]
        dropped, items = len(items) - len(alignable), alignable
    if not items:
        return Batch.empty(dropped)
    lengths = torch.tensor([u.features.shape[1] for u in items], dtype=torch.long)
    features = torch.zeros(len(items), items[0].features.shape[0], int(lengths.max()))
    for n, u in enumerate(items):
        features[n, :, : u.features.shape[1]] = u.features
    target_lengths = torch.tensor([len(u.labels) for u in items], dtype=torch.long)
    targets = torch.cat([u.labels for u in items])
    return Batch(
        features, lengths, targets, target_lengths, [u.id for u in items], [u.transcript for u in items], dropped
    )


class BatchList:
    """A batch sampler over fixed index lists; `set(batches, epoch)` replaces them between epochs.

    It yields keys (index, epoch) for the dataset (epoch None: evaluation, never augmented).
    DataLoader asks its batch sampler for a new iterator every epoch, so persistent workers keep
    running while the batch order changes.
    """

    def __init__(self, batches: list[list[int]], epoch: int | None = None):
        self.set(batches, epoch)

    def set(self, batches: list[list[int]], epoch: int | None = None) -> None:
        self.batches, self.epoch = [list(b) for b in batches], epoch

    def __iter__(self):
        return iter([[(i, self.epoch) for i in batch] for batch in self.batches])

    def __len__(self) -> int:
        return len(self.batches)


def make_loader(
    dataset: UtteranceDataset, batches: list[list[int]], num_workers: int, pin_memory: bool, training: bool = False
) -> DataLoader:
    """DataLoader yielding Batches in the given order (training: unalignable utterances left out).

    Its batch sampler is a BatchList: `loader.batch_sampler.set(batches, epoch)` changes the batches
    of a later epoch (TrainingBatches does it for the trainer). Memory is pinned only when CUDA is available.
    """
    return DataLoader(
        dataset,
        batch_sampler=BatchList(batches),
        collate_fn=functools.partial(collate, training=training),
        num_workers=num_workers,
        pin_memory=pin_memory and torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
    )


class TrainingBatches:
    """One rank's share of the training split, epoch by epoch: for each optimiser step, the global
    batch (manifest rows) and this rank's micro-batches of it, loaded (and augmented for that epoch)
    by persistent DataLoader workers."""

    def __init__(self, split: Split, p: Params, world: World):
        self.split, self.p, self.world = split, p, world
        self.loader = make_loader(split.dataset, [], p.num_workers, world.device.type == "cuda", training=True)

    def steps(self) -> int:
        """Optimiser steps per epoch (the same every epoch: shuffling only reorders the batches)."""
        return len(global_batches(len(self.split), self.p.batch_size, False, self.p.seed, 0))

    def epoch(self, epoch: int) -> Iterator[tuple[list[int], list[Batch]]]:
        """(global batch, this rank's micro-batches) per step of epoch `epoch` (0-based)."""
        p, world = self.p, self.world
        batches = global_batches(len(self.split), p.batch_size, p.shuffle_batches, p.seed, epoch)
        accumulation = p.accumulation_steps(world.size)
        mine = [micro_batches(b, world.size, accumulation, world.rank) for b in batches]
        self.loader.batch_sampler.set([m for step in mine for m in step], epoch)
        data = iter(self.loader)
        for global_batch, parts in zip(batches, mine):
            yield global_batch, [next(data) for _ in parts]


def evaluation_loader(split: Split, p: Params, world: World) -> DataLoader:
    """This rank's share of an evaluation split, as stored (never augmented), in length-ordered
    batches of the training micro-batch's size (the batch size changes no result: the model is
    padding-blind, and no large global batch ever reaches one device)."""
    batches = global_batches(len(split), p.micro_batch(world.size), False, p.seed, 0)[world.rank :: world.size]
    return make_loader(split.dataset, batches, p.num_workers, world.device.type == "cuda")
