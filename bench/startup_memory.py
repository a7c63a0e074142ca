"""Trainer start-up time and memory at LibriSpeech scale: the manifest, the splits and an epoch of the loader.

The prepared dataset this builds has --rows training rows (default 281,241, LibriSpeech's 960 h)
with LibriSpeech-shaped durations (bench.epoch_time.librispeech_durations: mean 12.3 s) and
LibriSpeech-length transcripts (pytorch.loader.CHARS_PER_SECOND characters a second: about 185 on
average), plus 5,567 validation rows (dev-clean + dev-other). The feature shards are few and reused:
every row points at the first `frames` frames of one of --shards shards, so the disk holds megabytes,
not 110 GB; the per-row work (reading, converting, normalising, padding) is the real one.

A fresh process (the trainer as it starts) then times the trainer's start-up path, as
pytorch.train.fit and train_epoch take it: the feature-config check, the training split as the
trainer opens it (loader.open_training_split: max_duration, augmentation) and the validation split,
the global batches and this rank's micro-batches, the two DataLoaders, and its first batch (the
workers start). It then iterates one full training epoch of the loader, without the model (the
loader is what could grow), and samples the memory of the main process and of each DataLoader
worker at --samples points of it, from /proc/<pid>/smaps_rollup:

- rss: resident pages, shared ones included (what `ps` shows; each worker counts its parent's pages);
- uss: pages no other process maps (Private_Clean + Private_Dirty): what the process really costs;
- private_dirty: the part of uss that was written: in a forked worker, the parent's pages it copied
  (copy-on-write, or copy-on-access of Python objects whose reference counts it touched).

A worker whose uss stays flat across the epoch shares the manifest with its parent for good.

    python -m bench.startup_memory                         # 281,241 rows, 2 workers (the default params)
    python -m bench.startup_memory --rows 2000 --json out.json
    python -m bench.startup_memory num_workers=4 batch_size=32   # params overrides
"""

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import exit_status
import params
from bench.epoch_time import LIBRISPEECH_TRAIN, librispeech_durations
from data.dataset_dir import FEATURE_CONFIG, manifest_of
from data.labels import LABELS
from data.manifest import make_row, row_line
from pytorch import loader
from pytorch.loader import CHARS_PER_SECOND

VAL_ROWS = 5_567  # dev-clean 2,703 + dev-other 2,864
MAX_SECONDS = LIBRISPEECH_TRAIN["max_s"]
WORD_LENGTHS = (2, 3, 4, 5, 6, 7, 8)  # letters per word of the generated transcripts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.startup_memory", description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="params key=value (batch_size, num_workers, ...)")
    parser.add_argument("--rows", type=int, default=LIBRISPEECH_TRAIN["utterances"], help="training rows")
    parser.add_argument("--val-rows", type=int, default=VAL_ROWS, help="validation rows")
    parser.add_argument("--shards", type=int, default=16, help="feature shards the rows share")
    parser.add_argument("--samples", type=int, default=10, help="memory samples across the epoch")
    parser.add_argument("--data-dir", type=Path, help="build the dataset here and keep it (default: a temporary dir)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # the child: measure --data-dir
    parser.add_argument("--started", type=float, default=0.0, help=argparse.SUPPRESS)  # the child's launch time
    args = parser.parse_args(argv)
    if args.rows < 1 or args.val_rows < 1 or args.shards < 1 or args.samples < 1:
        raise exit_status.UsageError("--rows, --val-rows, --shards and --samples must be at least 1")
    return args


# ---------------------------------------------------------------- the dataset


def transcripts(lengths: np.ndarray, rng: np.random.Generator) -> list[str]:
    """One string of each length: words of random letters (and apostrophes) between single spaces."""
    letters = np.array(list(LABELS[1:28]))  # A-Z and the apostrophe: no blank, no space
    pool_words = rng.choice(letters, size=(50_000, max(WORD_LENGTHS)))
    sizes = rng.choice(WORD_LENGTHS, size=len(pool_words))
    pool = " ".join("".join(word[:size]) for word, size in zip(pool_words, sizes))
    starts = rng.integers(0, len(pool) - int(lengths.max()) - 1, size=len(lengths))
    return [pool[s : s + n].strip() or "A" for s, n in zip(starts, lengths)]


def write_shards(data_dir: Path, count: int, p: params.Params, rng: np.random.Generator) -> list[str]:
    """`count` float16 shards long enough for the longest utterance; their paths relative to data_dir."""
    frames = 1 + round(MAX_SECONDS * p.sample_rate / p.hop_length)
    paths = [f"features/train-clean-100/{1000 + k}-{k}.npy" for k in range(count)]
    for relative in paths:
        (data_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        np.save(data_dir / relative, rng.standard_normal((frames, p.n_features)).astype(np.float16))
    return paths


def write_manifest(data_dir: Path, name: str, subset: str, seconds: np.ndarray, shards: list[str], p, rng) -> None:
    """manifests/<name>.jsonl in canonical lines (as prepare writes them), ascending (duration, id)."""
    seconds = np.sort(np.round(seconds, 3))
    texts = transcripts(np.maximum(1, np.round(seconds * CHARS_PER_SECOND)).astype(int), rng)
    path = data_dir / manifest_of(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for n, (duration, text) in enumerate(zip(seconds.tolist(), texts)):
            speaker, chapter, utterance = 1000 + n % len(shards), n // 100, n % 100
            uid = f"{speaker}-{chapter}-{utterance:04d}"
            frames = 1 + round(duration * p.sample_rate / p.hop_length)
            audio = f"LibriSpeech/{subset}/{speaker}/{chapter}/{uid}.flac"  # never opened by the trainer
            f.write(row_line(make_row(uid, subset, duration, frames, text, audio, shards[n % len(shards)], 0)))


def durations(count: int) -> np.ndarray:
    """(count,) seconds, ascending: evenly spaced quantiles of the LibriSpeech-shaped training set
    (librispeech_durations scales whatever count it makes to 960.9 h; this keeps its mean of 12.3 s)."""
    full = librispeech_durations()
    return full[np.linspace(0, len(full) - 1, count).round().astype(int)]


def build_dataset(data_dir: Path, args, p: params.Params) -> None:
    """The prepared dataset directory the trainer reads: features.json, shards, train and val manifests."""
    rng = np.random.default_rng(0)
    (data_dir / FEATURE_CONFIG).parent.mkdir(parents=True, exist_ok=True)
    (data_dir / FEATURE_CONFIG).write_text(json.dumps(p.feature_config()))
    shards = write_shards(data_dir, args.shards, p, rng)
    write_manifest(data_dir, p.train_manifest, "train-clean-100", durations(args.rows), shards, p, rng)
    write_manifest(data_dir, p.val_manifest, "dev-clean", durations(args.val_rows), shards, p, rng)


# ---------------------------------------------------------------- memory


def memory_of(pid: int) -> dict:
    """MB of rss, uss (Private_Clean + Private_Dirty) and private_dirty, from /proc/<pid>/smaps_rollup."""
    kb = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        kb[key] = int(value.split()[0])
    mb = {key: kb[key] / 1024 for key in ("Rss", "Pss", "Private_Clean", "Private_Dirty")}
    uss = mb["Private_Clean"] + mb["Private_Dirty"]
    return {"rss": mb["Rss"], "pss": mb["Pss"], "uss": uss, "private_dirty": mb["Private_Dirty"]}


def sample(at_batch: int) -> dict:
    """The memory of this process and of each of its DataLoader workers (its multiprocessing children)."""
    workers = sorted(multiprocessing.active_children(), key=lambda w: w.pid)
    return {"batch": at_batch, "main": memory_of(os.getpid()), "workers": [memory_of(w.pid) for w in workers]}


# ---------------------------------------------------------------- the trainer's start-up and one epoch


class Clock:
    """Seconds per named stage, in order."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = now - self._last
        self._last = now


def measure(data_dir: Path, p: params.Params, samples: int, started: float) -> dict:
    """The trainer's start-up path (as pytorch.train.fit and train_epoch take it) and one epoch of its loader."""
    clock = Clock()
    clock.seconds["launch_and_imports"] = time.time() - started if started else float("nan")
    loader.check_features(data_dir, p)
    train = loader.open_training_split(data_dir, p)
    clock.lap("open_train_split")
    val = loader.open_split(data_dir, p.val_manifest)
    clock.lap("open_val_split")
    batches = loader.global_batches(len(train), p.batch_size, p.shuffle_batches, p.seed, 0)
    mine = [loader.micro_batches(b, 1, p.accumulation_steps(1), 0) for b in batches]
    clock.lap("global_batches")
    train_loader = loader.make_loader(train.dataset, [], p.num_workers, pin_memory=False, training=True)
    val_batches = loader.global_batches(len(val), p.micro_batch(1), False, p.seed, 0)  # as pytorch.train
    loader.make_loader(val.dataset, val_batches, p.num_workers, pin_memory=False)
    train_loader.batch_sampler.set([m for step in mine for m in step], 0)
    clock.lap("make_loaders")
    data = iter(train_loader)
    first = next(data)
    clock.lap("first_batch")
    memory = epoch_memory(data, len(train_loader), samples, len(first) + first.dropped)
    clock.lap("epoch")
    return {"rows": len(train), "val_rows": len(val), "batches": len(train_loader), "seconds": clock.seconds} | memory


def epoch_memory(data, batches: int, samples: int, utterances: int) -> dict:
    """Memory at the start (first batch read: `utterances`), at `samples` points across the rest of
    the epoch, and at its end."""
    points = set(np.linspace(1, batches, samples + 1).round().astype(int).tolist()[1:])
    taken = [sample(1)]
    for n, batch in enumerate(data, 2):
        utterances += len(batch) + batch.dropped
        if n in points:
            taken.append(sample(n))
    return {"memory": taken, "epoch_utterances": utterances}


# ---------------------------------------------------------------- report


def report(result: dict) -> str:
    seconds = result["seconds"]
    startup = sum(seconds[k] for k in ("open_train_split", "open_val_split", "global_batches", "make_loaders"))
    lines = [
        f"{result['rows']:,} training rows, {result['val_rows']:,} validation rows, {result['batches']:,} batches",
        f"start-up: {startup:.2f} s (open train split {seconds['open_train_split']:.2f}, val "
        f"{seconds['open_val_split']:.2f}, global batches {seconds['global_batches']:.2f}, loaders "
        f"{seconds['make_loaders']:.2f}); first batch (workers start) {seconds['first_batch']:.2f} s; "
        f"launch and imports {seconds['launch_and_imports']:.2f} s; epoch {seconds['epoch']:.1f} s",
        f"{'batch':>8} {'main rss':>9} {'main uss':>9}   workers rss / uss / private_dirty (MB)",
    ]
    for s in result["memory"]:
        workers = "   ".join(f"{w['rss']:.0f} / {w['uss']:.0f} / {w['private_dirty']:.0f}" for w in s["workers"])
        lines.append(f"{s['batch']:>8,} {s['main']['rss']:>9.0f} {s['main']['uss']:>9.0f}   {workers}")
    first, last = result["memory"][0], result["memory"][-1]
    growth = [b["uss"] - a["uss"] for a, b in zip(first["workers"], last["workers"])]
    lines.append(f"worker uss growth over the epoch: {', '.join(f'{g:+.1f}' for g in growth) or 'no workers'} MB")
    return "\n".join(lines)


def run_child(data_dir: Path, args) -> dict:
    """Measure in a fresh interpreter, so its memory is the trainer's, not the dataset builder's."""
    command = [sys.executable, "-m", "bench.startup_memory", "--measure", "--data-dir", str(data_dir)]
    command += ["--samples", str(args.samples), "--started", repr(time.time()), *args.overrides]
    child = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if child.returncode:
        raise exit_status.Failure(f"the measuring process exited with status {child.returncode}")
    return json.loads(child.stdout)


def run(args) -> exit_status.ExitStatus:
    p = params.parse(args.overrides)
    if args.measure:
        print(json.dumps(measure(args.data_dir, p, args.samples, args.started)))
        return exit_status.ExitStatus.OK
    with tempfile.TemporaryDirectory(prefix="startup-memory-") as scratch:
        data_dir = args.data_dir or Path(scratch)
        started = time.perf_counter()
        build_dataset(data_dir, args, p)
        print(f"built {args.rows:,} + {args.val_rows:,} rows in {data_dir} in {time.perf_counter() - started:.1f} s")
        result = run_child(data_dir, args)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return exit_status.ExitStatus.OK


def main(argv: list[str] | None = None) -> int:
    return exit_status.run(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
