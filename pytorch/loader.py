"""Manifests -> length-ordered, padded batches, and how a global batch is split across processes.

Batches are consecutive runs of the manifest (ascending duration), so each holds utterances of
similar length and little padding; shuffling permutes only the ORDER of the batches. A global batch
is cut into world_size * accumulation_steps contiguous micro-batches in one fixed order, so the
same utterances meet in the same micro-batch whatever the mix of processes and accumulation steps.
"""

import json
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data import labels
from data.manifest import FIELDS
from params import Params

OPEN_SHARDS = 256  # memory maps kept open per process; each holds a file descriptor
MIN_STD = 1e-5  # floor of the normalising std, so a silent (constant) utterance gives zeros, not NaN


class LoaderError(ValueError):
    """A missing or malformed manifest, feature file or feature config."""


def manifest_path(data_dir, name: str) -> Path:
    """data_dir/manifests/<name>.jsonl; LoaderError if it does not exist."""
    path = Path(data_dir) / "manifests" / f"{name}.jsonl"
    if not path.is_file():
        raise LoaderError(f"{path}: no such manifest; prepare the data first with ./download_dataset.sh")
    return path


def read_manifest(path) -> list[dict]:
    """Rows of a JSON Lines manifest, in file order; LoaderError naming file and line on a bad row."""
    rows = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            rows.append(_parse_row(line, f"{path}:{number}"))
    return rows


def _parse_row(line: str, where: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise LoaderError(f"{where}: not a JSON object ({err.msg})") from None
    if not isinstance(row, dict):
        raise LoaderError(f"{where}: not a JSON object")
    for name, types in FIELDS.items():
        if name not in row:
            raise LoaderError(f"{where}: missing field {name!r}")
        value = row[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise LoaderError(f"{where}: field {name!r}={value!r} should be {' or '.join(t.__name__ for t in types)}")
    for name in ("duration", "frames", "offset"):
        if row[name] < 0:
            raise LoaderError(f"{where}: field {name!r}={row[name]!r} is negative")
    return row


def check_features(data_dir, p: Params) -> None:
    """LoaderError unless features/features.json equals p.feature_config()."""
    path = Path(data_dir) / "features" / "features.json"
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LoaderError(f"{path}: missing; prepare the data first with ./download_dataset.sh") from None
    except json.JSONDecodeError as err:
        raise LoaderError(f"{path}: not valid JSON ({err.msg})") from None
    wanted = p.feature_config()
    if not isinstance(stored, dict):
        raise LoaderError(f"{path}: expected a JSON object, found {type(stored).__name__}")
    differing = sorted(k for k in wanted.keys() | stored.keys() if stored.get(k) != wanted.get(k))
    if differing:
        details = ", ".join(f"{k}: data {stored.get(k)!r} vs params {wanted.get(k)!r}" for k in differing)
        raise LoaderError(
            f"{path}: the features were prepared with other feature parameters ({details}); "
            "re-run data preparation with these parameters or train with the data's"
        )


def filter_rows(rows: list[dict], max_duration: float) -> list[dict]:
    """Rows no longer than max_duration seconds (0: all rows), order kept."""
    if max_duration <= 0:
        return list(rows)
    return [row for row in rows if row["duration"] <= max_duration]


def normalise(features: torch.Tensor) -> torch.Tensor:
    """(F, T) -> (F, T) with zero mean and unit std over the whole utterance (the reference's
    single mean and std); the std is floored so a silent utterance gives zeros, not NaN."""
    return (features - features.mean()) / features.std().clamp(min=MIN_STD)


class UtteranceDataset(Dataset):
    """Item i -> (features (F, T) float32, labels (L,) int64, id) of manifest row i.

    Features are normalised by the utterance's single mean and std, as the reference did.
    Transcripts are encoded once here, so a bad character fails before training starts.
    """

    def __init__(self, data_dir, rows: list[dict]):
        self.data_dir = Path(data_dir)
        self.rows = rows
        self.targets = [self._encode(row) for row in rows]
        self._shards: OrderedDict[str, np.ndarray] = OrderedDict()
        self._pid = os.getpid()

    @staticmethod
    def _encode(row: dict) -> list[int]:
        try:
            return labels.encode(row["transcript"])
        except labels.UnknownCharacter as err:
            raise LoaderError(f"utterance {row['id']}: {err}") from None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        row = self.rows[i]
        frames = self._frames(row)
        features = torch.from_numpy(np.ascontiguousarray(frames.T, dtype=np.float32))
        return normalise(features), torch.tensor(self.targets[i], dtype=torch.long), row["id"]

    def _frames(self, row: dict) -> np.ndarray:
        """The utterance's (T, F) slice of its shard, checked against the manifest."""
        shard = self._shard(row["features"])
        start, count = row["offset"], row["frames"]
        if shard.ndim != 2 or start + count > shard.shape[0] or count == 0:
            raise LoaderError(
                f"utterance {row['id']}: frames [{start}, {start + count}) not in {self.data_dir / row['features']} "
                f"of shape {shard.shape}; the data is damaged or stale, run data.verify"
            )
        return shard[start : start + count]

    def _shard(self, relative: str) -> np.ndarray:
        """Memory-mapped shard, cached per process (a forked worker must not reuse its parent's maps)."""
        if self._pid != os.getpid():
            self._shards, self._pid = OrderedDict(), os.getpid()
        shard = self._shards.get(relative)
        if shard is None:
            path = self.data_dir / relative
            try:
                shard = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as err:
                raise LoaderError(f"{path}: cannot read feature shard ({err})") from None
            self._shards[relative] = shard
            if len(self._shards) > OPEN_SHARDS:
                self._shards.popitem(last=False)
        else:
            self._shards.move_to_end(relative)
        return shard

    def __getstate__(self) -> dict:
        # Workers open their own maps; pickling the open ones would copy whole shards.
        return self.__dict__ | {"_shards": OrderedDict()}


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


def micro_batches(global_batch: list[int], world_size: int, accumulation_steps: int, rank: int) -> list[list[int]]:
    """This rank's micro-batch for each accumulation step.

    The global batch is cut into world_size * accumulation_steps contiguous parts whose sizes
    differ by at most one (larger ones first); step s of rank r takes part s * world_size + r.
    Parts may be empty when the batch is smaller than the number of parts.
    """
    if world_size < 1 or accumulation_steps < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"world_size={world_size}, accumulation_steps={accumulation_steps}, rank={rank}: "
            "need world_size >= 1, accumulation_steps >= 1 and 0 <= rank < world_size"
        )
    parts = world_size * accumulation_steps
    size, extra = divmod(len(global_batch), parts)
    bounds = [m * size + min(m, extra) for m in range(parts + 1)]
    return [global_batch[bounds[m] : bounds[m + 1]] for m in (s * world_size + rank for s in range(accumulation_steps))]


def collate(items: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """[(features (F, T_i), labels (L_i,), id)] -> (features (N, F, Tmax) zero-padded,
    feature_lengths (N,), targets (sum L_i,), target_lengths (N,), ids).

    An empty list gives N = 0 tensors (features (0, 0, 0)), for an empty tail micro-batch.
    """
    if not items:
        empty = torch.zeros(0, dtype=torch.long)
        return torch.zeros(0, 0, 0), empty, empty, empty.clone(), []
    features, targets, ids = zip(*items)
    feature_lengths = torch.tensor([f.shape[1] for f in features], dtype=torch.long)
    batch = torch.zeros(len(items), features[0].shape[0], int(feature_lengths.max()))
    for n, f in enumerate(features):
        batch[n, :, : f.shape[1]] = f
    target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
    return batch, feature_lengths, torch.cat(targets), target_lengths, list(ids)


class BatchList:
    """A batch sampler over fixed index lists; `set(batches)` replaces them between epochs.

    DataLoader asks its batch sampler for a new iterator every epoch, so persistent workers
    keep running while the batch order changes.
    """

    def __init__(self, batches: list[list[int]]):
        self.batches = [list(b) for b in batches]

    def set(self, batches: list[list[int]]) -> None:
        self.batches = [list(b) for b in batches]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def make_loader(
    dataset: Dataset, batches_for_this_rank: list[list[int]], num_workers: int, pin_memory: bool
) -> DataLoader:
    """DataLoader yielding collate()d batches in the given order.

    Change the batches of a later epoch with `loader.batch_sampler.set(batches)`.
    Memory is pinned only when CUDA is available.
    """
    return DataLoader(
        dataset,
        batch_sampler=BatchList(batches_for_this_rank),
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=pin_memory and torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
    )
