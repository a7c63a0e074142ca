"""Projected training time of one LibriSpeech epoch on this device, from timed steps per length bucket.

Durations: LibriSpeech-shaped synthetic ones (281,241 utterances, 960.9 h, mean 12.3 s, a tail to
35 s; `LIBRISPEECH_TRAIN`), or the real ones of a prepared manifest (--manifest). They are cut into
the trainer's length-ordered global batches (batch_size) and micro-batches (per device: batch_size /
(world size x gradient_accumulation_steps)); the global batches are grouped into --buckets buckets
by length, and in each bucket the trainer's own step (pytorch.train.train_step) is timed, device-
synchronised, on a synthetic micro-batch of the bucket's mean padded length (a step costs about its
length: the recurrent layers run frame by frame). The epoch is the sum over buckets of (steps in the
bucket x its step time); the cost of timing is --buckets x (--steps + 1) steps whatever the corpus size.
The longest micro-batch's memory is the trainer's own start-up check (pytorch.train.check_memory).

    python -m bench.epoch_time preset=tiny --buckets 3 --steps 1           # CPU, seconds
    python -m bench.epoch_time precision=bf16 batch_size=256 --world-size 8
    python -m bench.epoch_time --sweep                                      # batch 8..256 x precisions

--world-size N projects N devices from this one: each runs its micro-batches and the gradient
all-reduce is NOT included (NVLink all-reduce of 829 MB of fp32 gradients: a few ms, overlapped with
the backward pass by DDP; an estimate, not measured here). Printed per configuration: step time per
bucket, utt/s, audio-s/s, peak device memory, achieved FLOP/s against a large matmul measured in the
same run and dtype, the projected epoch and 10-epoch times.
"""

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

import exit_status
import params
from bench.train_step import forward_macs, gemm_gflops, sync
from data.features import frame_count
from pytorch import distributed, loader, precision, train

# LibriSpeech's 960 h training set (train-clean-100 + train-clean-360 + train-other-500).
LIBRISPEECH_TRAIN = {"utterances": 281_241, "hours": 960.9, "max_s": 35.2}
SWEEP_BATCHES = (8, 32, 128, 256)


def librispeech_durations(count: int = LIBRISPEECH_TRAIN["utterances"], seed: int = 0) -> np.ndarray:
    """(count,) seconds, ascending, shaped like LibriSpeech's training set: mostly 10-17 s segments
    (its alignment cut at about 16-17 s), a share of shorter chapter-end segments and a thin tail to
    35 s; scaled to the set's 960.9 h (mean 12.3 s). A shape, not LibriSpeech's own durations:
    --manifest gives the real ones."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, size=count, p=[0.80, 0.185, 0.015])
    main = np.clip(rng.normal(14.6, 1.8, count), 5.0, 17.4)
    short = rng.uniform(1.0, 12.0, count)
    tail = rng.uniform(17.4, LIBRISPEECH_TRAIN["max_s"], count)
    seconds = np.choose(kind, [main, short, tail])
    body = kind < 2  # scaled to the set's total; the tail stays where it is
    seconds[body] *= (LIBRISPEECH_TRAIN["hours"] * 3600 - seconds[~body].sum()) / seconds[body].sum()
    return np.sort(seconds)


def trained_durations(durations: np.ndarray, p: params.Params) -> np.ndarray:
    """The durations the trainer trains on: without those over p.max_duration (0: all), as
    pytorch.loader.open_training_split leaves them out."""
    return durations[durations <= p.max_duration] if p.max_duration > 0 else durations


def manifest_durations(path: Path) -> np.ndarray:
    return np.sort(loader.Manifest.read(path).duration)


@dataclasses.dataclass
class Bucket:
    steps: int  # global batches whose longest utterance falls in this bucket
    utterances: int
    audio_s: float
    micro_batch: int  # utterances per device per micro-batch (the largest)
    frames: int  # mean padded length of the bucket's micro-batches, in frames


def buckets_of(durations: np.ndarray, p: params.Params, world_size: int, n_buckets: int) -> list[Bucket]:
    """The run's global batches (length order), grouped into n_buckets of about equal step counts."""
    batches = loader.global_batches(len(durations), p.batch_size, False, p.seed, 0)
    parts = world_size * p.accumulation_steps(world_size)
    groups = np.array_split(np.arange(len(batches)), min(n_buckets, len(batches)))
    result = []
    for group in groups:
        members = [batches[i] for i in group]
        # A step costs about its padded length (the recurrent layers run frame by frame): time the
        # bucket at the mean of its batches' longest utterances.
        padded = float(np.mean([durations[b[-1]] for b in members]))
        result.append(
            Bucket(
                steps=len(members),
                utterances=sum(len(b) for b in members),
                audio_s=float(sum(durations[b].sum() for b in members)),
                micro_batch=max(1, math.ceil(max(len(b) for b in members) / parts)),
                frames=frame_count(round(padded * p.sample_rate), p),
            )
        )
    return result


def time_bucket(trainer: train.Trainer, bucket: Bucket, steps: int, accumulation: int) -> float:
    """Median seconds of one optimiser step (`accumulation` micro-batches) after a warm-up."""
    p, device = trainer.p, trainer.world.device
    batch = loader.Batch.synthetic(bucket.micro_batch, p.n_features, bucket.frames, torch.Generator().manual_seed(0))
    if device.type == "cuda":
        batch = batch.pin_memory()
    micro = [batch] * accumulation
    count = bucket.micro_batch * accumulation
    times = []
    for step in range(steps + 1):
        sync(device)
        start = time.perf_counter()
        train.train_step(trainer, micro, count)
        sync(device)
        if step:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure(p: params.Params, durations: np.ndarray, args) -> dict:
    """One configuration: per-bucket step times and the projected epoch."""
    world = distributed.single(args.device)
    if world.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(world.device)
    trainer = train.build_trainer(p, world, total_steps=10**6)
    durations = trained_durations(durations, p)
    accumulation = p.accumulation_steps(args.world_size)
    buckets = buckets_of(durations, p, args.world_size, args.buckets)
    rows, epoch_s, flops = [], 0.0, 0.0
    for bucket in buckets:
        try:
            step_s = time_bucket(trainer, bucket, args.steps, accumulation)
        except torch.OutOfMemoryError:
            trainer.optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            return {
                "config": describe(p, args),
                "error": f"out of memory at {bucket.micro_batch} x {bucket.frames} frames",
            }
        rows.append(dataclasses.asdict(bucket) | {"step_s": step_s})
        epoch_s += bucket.steps * step_s
        # FLOPs of this device's share: micro-batches of the bucket's length (padding included, as run).
        per_step = 3 * 2 * forward_macs(p, bucket.frames) * bucket.micro_batch * accumulation
        flops += bucket.steps * per_step
    dtype = precision.compute_dtype(p.precision)
    bound = gemm_gflops(dtype, size=8192 if world.device.type == "cuda" else 1024)
    utterances, audio_s = sum(b.utterances for b in buckets), sum(b.audio_s for b in buckets)
    peak = torch.cuda.max_memory_allocated(world.device) if world.device.type == "cuda" else None
    return {
        "config": describe(p, args),
        "recurrent_dtype": trainer.recurrent_dtype,
        "buckets": rows,
        "epoch_s": epoch_s,
        "ten_epochs_s": 10 * epoch_s,
        "utt_per_s": utterances / epoch_s,
        "audio_s_per_s": audio_s / epoch_s,
        "peak_memory_bytes": peak,
        "achieved_gflops": flops / epoch_s / 1e9,
        "matmul_gflops": bound,
        "efficiency": flops / epoch_s / 1e9 / bound,
    }


def describe(p: params.Params, args) -> str:
    return (
        f"preset={p.preset or '-'} precision={p.precision} fp32_math={p.fp32_math} batch={p.batch_size} "
        f"accumulation={p.accumulation_steps(args.world_size)} world={args.world_size} "
        f"(micro-batch {p.micro_batch(args.world_size)}/device)"
    )


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def report(result: dict) -> str:
    if "error" in result:
        return f"{result['config']}: {result['error']}"
    lines = [result["config"] + f"  (recurrent layers in {result['recurrent_dtype']})"]
    lines.append("  bucket  steps  micro-batch x frames  step (s)")
    for i, b in enumerate(result["buckets"]):
        lines.append(f"  {i:6d}  {b['steps']:5d}  {b['micro_batch']:11d} x {b['frames']:6d}  {b['step_s']:8.3f}")
    peak = result["peak_memory_bytes"]
    memory = f"peak memory {peak / 2**30:.1f} GiB" if peak is not None else "peak memory n/a (CPU)"
    lines += [
        f"  utt/s {result['utt_per_s']:.1f}   audio-s/s {result['audio_s_per_s']:.1f}   {memory}",
        f"  achieved {result['achieved_gflops']:.1f} GFLOP/s = {result['efficiency']:.1%} of a large matmul "
        f"({result['matmul_gflops']:.1f} GFLOP/s, same dtype, this run)",
        f"  projected: one epoch {hours(result['epoch_s'])}, 10 epochs {hours(result['ten_epochs_s'])}",
    ]
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m bench.epoch_time",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="parameters (default: the full model)")
    parser.add_argument("--manifest", type=Path, help="real durations from this prepared manifest (.jsonl)")
    parser.add_argument("--buckets", type=int, default=8, help="length buckets timed (default %(default)s)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per bucket after a warm-up (default 2)")
    parser.add_argument("--world-size", type=int, default=1, help="devices the run would use (default 1)")
    parser.add_argument("--sweep", action="store_true", help=f"batch sizes {SWEEP_BATCHES} x each precision")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    args = parser.parse_intermixed_args(argv)
    for name in ("buckets", "steps", "world_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def configurations(args) -> list[params.Params]:
    base = params.parse(args.overrides)
    if not args.sweep:
        return [base]
    precisions = ["fp32", "bf16"] + (["fp16"] if torch.device(args.device).type == "cuda" else [])
    return [dataclasses.replace(base, batch_size=b, precision=x) for b in SWEEP_BATCHES for x in precisions]


def run(args) -> None:
    durations = manifest_durations(args.manifest) if args.manifest else librispeech_durations()
    results = []
    print(
        f"durations: {len(durations):,} utterances, {durations.sum() / 3600:.1f} h, mean {durations.mean():.2f} s, "
        f"max {durations.max():.1f} s ({args.manifest or 'LibriSpeech-shaped synthetic'}); device {args.device}, "
        f"torch {torch.__version__}"
    )
    for p in configurations(args):
        result = measure(p, durations, args)
        results.append(result)
        print(report(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"durations": len(durations), "results": results}, indent=1) + "\n")


def main(argv=None) -> int:
    args = parse_args(argv)
    return exit_status.run(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
