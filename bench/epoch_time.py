"""Projected training time of one LibriSpeech epoch on this device, from timed steps per length bucket.

Durations: LibriSpeech-shaped synthetic ones (281,241 utterances, 960.9 h, mean 12.3 s, a tail to
35 s; `LIBRISPEECH_TRAIN`), or the real ones of a prepared manifest (--manifest). They are cut into
the trainer's length-ordered global batches (batch_size) and micro-batches (per device: batch_size /
(world size x gradient_accumulation_steps)); the global batches are grouped into --buckets buckets
by length, and in each bucket the trainer's own step (pytorch.train.train_step) is timed, device-
synchronised, on a synthetic micro-batch of the bucket's mean padded length (a step costs about its
length: the recurrent layers run frame by frame). The epoch is the sum over buckets of (steps in the
bucket x its step time); the cost of timing is --buckets x (--steps + 1) steps whatever the corpus size.
The longest micro-batch's memory is the trainer's own start-up check (pytorch.memory.check).

    python -m bench.epoch_time preset=tiny --buckets 3 --steps 1           # CPU, seconds
    python -m bench.epoch_time precision=bf16 batch_size=256 --world-size 8
    python -m bench.epoch_time --sweep --json FILE          # SWEEP's configurations, most needed first

--world-size N projects N devices from this one: each runs its micro-batches and the gradient
all-reduce is NOT included (NVLink all-reduce of 829 MB of fp32 gradients: a few ms, overlapped with
the backward pass by DDP; an estimate, not measured here). Printed per configuration: step time per
bucket, utt/s, audio-s/s, peak device memory, achieved FLOP/s against a large matmul measured in the
same run and dtype, the projected epoch and 10-epoch times. --json FILE is rewritten after every
configuration (atomically), with the planned ones listed, so a sweep stopped at its time budget keeps
every figure it measured and says which configurations it did not reach.
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

import exit_status
import params
from bench.train_step import forward_macs, gemm_gflops, sync
from data.features import frame_count
from data.files import write_atomically
from pytorch import distributed, loader, memory, precision, train

# LibriSpeech's 960 h training set (train-clean-100 + train-clean-360 + train-other-500).
LIBRISPEECH_TRAIN = {"utterances": 281_241, "hours": 960.9, "max_s": 35.2}


@dataclasses.dataclass(frozen=True)
class SweepEntry:
    label: str
    overrides: dict  # applied over RECIPE, over the command line's parameters
    world_size: int  # devices the run would use; this device runs one rank's share


# The default recipe's batch and precision knobs (params.py's defaults), which the sweep's entries
# start from whatever model the command line names (the full one, or preset=tiny in a rehearsal).
RECIPE = {
    name: params.FIELDS[name].default for name, k in params.KNOBS.items() if k.group in (params.BATCH, params.PRECISION)
}
# What --sweep (make gpu-check) measures, in the order a user needs the figures: a sweep stopped at its
# budget keeps the first. The default recipe as 8 GPUs run it (one micro-batch of 32 per GPU and
# step), the 2018 reference run, the other precisions, then one GPU alone and other micro-batches.
SWEEP = (
    SweepEntry("default recipe, bf16, 8 GPUs", {}, 8),
    SweepEntry("2018 reference run, 1 GPU", params.load_preset("reference2018"), 1),
    SweepEntry("default recipe, fp16, 8 GPUs", {"precision": "fp16"}, 8),
    SweepEntry("default recipe, fp32 as tf32, 8 GPUs", {"precision": "fp32", "fp32_math": "tf32"}, 8),
    SweepEntry("default recipe, fp32, 8 GPUs", {"precision": "fp32"}, 8),
    SweepEntry("default recipe, bf16, 1 GPU (8 x 32)", {}, 1),
    SweepEntry("bf16, micro-batch 64, 4 GPUs", {"micro_batch_size": 64}, 4),
    SweepEntry("bf16, micro-batch 16, 8 GPUs (2 x 16)", {"micro_batch_size": 16}, 8),
)


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


def measure(p: params.Params, world_size: int, durations: np.ndarray, args) -> dict:
    """One configuration: per-bucket step times and the projected epoch."""
    world = distributed.single(args.device)
    if world.device.type == "cuda":
        torch.cuda.empty_cache()  # the previous configuration's blocks
        torch.cuda.reset_peak_memory_stats(world.device)
    trainer = train.build_trainer(p, world, total_steps=10**6)
    durations = trained_durations(durations, p)
    accumulation = p.accumulation_steps(world_size)
    buckets = buckets_of(durations, p, world_size, args.buckets)
    rows, epoch_s, flops = [], 0.0, 0.0
    for bucket in buckets:
        try:
            step_s = time_bucket(trainer, bucket, args.steps, accumulation)
        except RuntimeError as err:  # torch's, cuDNN's or cuBLAS's allocation failure
            if not memory.is_out_of_memory(err):
                raise
            trainer.optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            return {
                "config": describe(p, world_size),
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
        "config": describe(p, world_size),
        "recurrent_dtype": trainer.recurrent.dtype,
        "recurrent_kernel": trainer.recurrent.kernel,
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


def describe(p: params.Params, world_size: int) -> str:
    return (
        f"preset={p.preset or '-'} precision={p.precision} fp32_math={p.fp32_math} batch={p.batch_size} "
        f"accumulation={p.accumulation_steps(world_size)} world={world_size} "
        f"(micro-batch {p.micro_batch(world_size)}/device)"
    )


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def report(result: dict) -> str:
    if "error" in result:
        return f"{result['config']}: {result['error']}"
    kernel = f"{result['recurrent_dtype']} on the {result['recurrent_kernel']} kernel"
    lines = [result["config"] + f"  (recurrent layers in {kernel})"]
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
    parser.add_argument(
        "--seconds-scale",
        type=float,
        default=1.0,
        help="multiply every duration by this (a CPU rehearsal times LibriSpeech's shape at 0.05 of its length)",
    )
    parser.add_argument("--buckets", type=int, default=8, help="length buckets timed (default %(default)s)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per bucket after a warm-up (default 2)")
    parser.add_argument("--world-size", type=int, default=1, help="devices the run would use (default 1)")
    parser.add_argument("--sweep", action="store_true", help="the configurations of SWEEP, most needed first")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    args = parser.parse_intermixed_args(argv)
    for name in ("buckets", "steps", "world_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not args.seconds_scale > 0:
        parser.error("--seconds-scale must be above 0")
    return args


def sweep(base: params.Params, cuda: bool) -> list[tuple[str, params.Params, int]]:
    """(label, parameters, world size) of SWEEP's configurations over base's model (fp16 only on CUDA,
    which it needs)."""
    return [
        (
            entry.label,
            params.make(base.to_dict() | RECIPE | entry.overrides | {"preset": base.preset}),
            entry.world_size,
        )
        for entry in SWEEP
        if cuda or entry.overrides.get("precision") != "fp16"
    ]


def configurations(args) -> list[tuple[str, params.Params, int]]:
    """What to measure: the command line's configuration, or with --sweep SWEEP's over its model."""
    base = params.parse(args.overrides)
    if not args.sweep:
        return [("", base, args.world_size)]
    return sweep(base, cuda=torch.device(args.device).type == "cuda")


def write_json(path: Path, header: dict, results: list[dict], complete: bool) -> None:
    """The figures so far, with what was planned: rewritten whole after every configuration."""
    measured = {r["config"] for r in results}
    not_reached = [c for c in header["planned"] if c not in measured]
    body = header | {"results": results, "not_reached": not_reached, "complete": complete}
    write_atomically(path, json.dumps(body, indent=1) + "\n")


def run(args) -> None:
    durations = args.seconds_scale * (manifest_durations(args.manifest) if args.manifest else librispeech_durations())
    print(
        f"durations: {len(durations):,} utterances, {durations.sum() / 3600:.1f} h, mean {durations.mean():.2f} s, "
        f"max {durations.max():.1f} s ({args.manifest or 'LibriSpeech-shaped synthetic'}); device {args.device}, "
        f"torch {torch.__version__}"
    )
    planned = configurations(args)
    header = {"durations": len(durations), "device": args.device, "planned": [describe(p, w) for _, p, w in planned]}
    results = []
    for label, p, world_size in planned:
        result = {"label": label} | measure(p, world_size, durations, args)
        results.append(result)
        print((f"[{label}] " if label else "") + report(result), flush=True)
        if args.json:
            write_json(args.json, header, results, complete=len(results) == len(planned))


def main(argv=None) -> int:
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", train.CUDA_ALLOC_CONF)  # as the trainer, before CUDA starts
    args = parse_args(argv)
    return exit_status.run(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
