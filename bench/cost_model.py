"""ESTIMATED training time of one LibriSpeech epoch on H100s, from first principles (no GPU needed).

Every figure this prints is an estimate from the model below, not a measurement; bench.epoch_time
measures on a real device. The model:
  * the run's own batches: LibriSpeech-shaped durations (bench.epoch_time.librispeech_durations, or a
    manifest's), cut by max_duration, in the trainer's length-ordered global batches and micro-batches
    (pytorch.loader), each micro-batch padded to its longest utterance;
  * a recurrent layer runs frame by frame, and each frame re-reads W_hh (3 x hidden^2 weights for a
    GRU: 78.6 MB in fp32, 39.3 MB in 16-bit, more than an H100's 50 MB L2): per frame and direction
    max(W_hh bytes / usable HBM bandwidth, its matmul's FLOPs / usable peak);
  * everything else (convolutions, the input projections of all frames at once, the head) is large
    matmuls: FLOPs / usable peak;
  * backward costs twice the forward (x 3 in all); the optimiser step streams weights, gradients and
    its state once; the gradient all-reduce is overlapped with the backward by DDP (printed apart).

    python -m bench.cost_model                               # the default recipe, 1 and 8 H100s
    python -m bench.cost_model preset=reference2018 --gpus 1
"""

import argparse
import dataclasses
import functools
import sys
from pathlib import Path

import numpy as np
import torch

import exit_status
import params
from bench.epoch_time import buckets_of, librispeech_durations, manifest_durations, sweep, trained_durations
from bench.train_step import GATES, forward_macs
from data.features import frame_count
from pytorch import loader, precision
from pytorch.model import DeepSpeech2, output_lengths


@dataclasses.dataclass(frozen=True)
class Gpu:
    """Datasheet figures and the share of them a real kernel gets (assumptions, not measurements)."""

    name: str
    hbm_bytes_s: float
    peak_flops: dict  # per compute dtype (dense tensor-core figures; fp32 = CUDA cores)
    bus_bytes_s: float  # NCCL all-reduce bus bandwidth within a node
    bandwidth_share: float = 0.7  # FACTS: 31-37 us per fp32 W_hh read against 23.5 us at full speed
    flops_share: float = 0.5


H100 = Gpu(
    "H100 SXM 80 GB",
    hbm_bytes_s=3.35e12,
    peak_flops={"fp32": 67e12, "tf32": 494e12, "bf16": 989e12, "fp16": 989e12},
    bus_bytes_s=360e9,
)


def compute_key(p: params.Params) -> str:
    return "tf32" if p.precision == "fp32" and p.fp32_math == "tf32" else p.precision


def recurrent_frame_s(p: params.Params, gpu: Gpu, utterances: int) -> float:
    """Seconds of one frame of one recurrent layer and direction, forward: W_hh read or its matmul."""
    weights = GATES[p.rnn_type] * p.hidden_size * p.hidden_size
    read = weights * precision.compute_dtype(p.precision).itemsize / (gpu.hbm_bytes_s * gpu.bandwidth_share)
    matmul = 2 * utterances * weights / (gpu.peak_flops[compute_key(p)] * gpu.flops_share)
    return max(read, matmul)


def micro_batch_s(p: params.Params, gpu: Gpu, utterances: int, frames: int) -> float:
    """Forward + backward seconds of one micro-batch of `utterances` padded to `frames` input frames."""
    rnn_frames = int(output_lengths(torch.tensor([frames]))[0])
    directions = 2 if p.bidirectional else 1
    recurrent = p.hidden_layers * directions * rnn_frames * recurrent_frame_s(p, gpu, utterances)
    hidden_macs = p.hidden_layers * directions * GATES[p.rnn_type] * p.hidden_size**2 * rnn_frames
    other_flops = 2 * (forward_macs(p, frames) - hidden_macs) * utterances
    other = other_flops / (gpu.peak_flops[compute_key(p)] * gpu.flops_share)
    return 3 * (recurrent + other)


def optimizer_step_s(p: params.Params, gpu: Gpu, n_params: int) -> float:
    """Weights, gradients (fp32) and optimiser state read and written once."""
    state = 2 if p.optimizer == "adamw" else 1
    return 2 * n_params * 4 * (2 + state) / (gpu.hbm_bytes_s * gpu.bandwidth_share)


def all_reduce_s(gpu: Gpu, n_params: int, gpus: int) -> float:
    """Ring all-reduce of the fp32 gradients (0 on one GPU)."""
    return 0.0 if gpus == 1 else 2 * (gpus - 1) / gpus * n_params * 4 / gpu.bus_bytes_s


def n_parameters(p: params.Params) -> int:
    """The model's parameter count, from the model built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        return sum(t.numel() for t in DeepSpeech2(p).parameters())


def estimate(p: params.Params, durations: np.ndarray, gpus: int, gpu: Gpu = H100) -> dict:
    """One epoch of p's run on `gpus` GPUs: the slowest rank's micro-batches, step by step."""
    durations = trained_durations(durations, p)
    accumulation = p.accumulation_steps(gpus)
    n_params = n_parameters(p)
    epoch_s, longest = 0.0, 0
    seconds_of = functools.cache(lambda n, frames: micro_batch_s(p, gpu, n, frames))  # few distinct shapes
    batches = loader.global_batches(len(durations), p.batch_size, False, p.seed, 0)
    for batch in batches:
        rank_s = [0.0] * gpus
        for rank in range(gpus):
            for part in loader.micro_batches(batch, gpus, accumulation, rank):  # the trainer's own split
                if part:
                    frames = frame_count(round(durations[part[-1]] * p.sample_rate), p)
                    rank_s[rank] += seconds_of(len(part), frames)
                    longest = max(longest, len(part))
        epoch_s += max(rank_s) + optimizer_step_s(p, gpu, n_params)
    return {
        "gpus": gpus,
        "gpu": gpu.name,
        "precision": p.precision,
        "batch_size": p.batch_size,
        "accumulation": accumulation,
        "micro_batch": longest,
        "steps": len(batches),
        "utterances": len(durations),
        "epoch_s": epoch_s,
        "ten_epochs_s": 10 * epoch_s,
        "all_reduce_per_step_s": all_reduce_s(gpu, n_params, gpus),
        "w_hh_read_us": recurrent_frame_s(p, gpu, 1) * 1e6,
    }


# Set-up seconds of bench.epoch_time --sweep that the model above does not see (ESTIMATES, not
# measured): the process (interpreter, torch import, CUDA context, the durations), and per
# configuration its full-size model initialised on the host and copied to the device, its probe and
# its matmul bound.
SWEEP_PROCESS_S = 20.0
SWEEP_CONFIGURATION_S = 8.0


def sweep_seconds(base: params.Params, n_buckets: int, steps: int, gpu: Gpu = H100) -> float:
    """ESTIMATED seconds of `bench.epoch_time --sweep --buckets n_buckets --steps steps` on one `gpu`:
    per configuration, (steps + 1) optimiser steps (a warm-up) in each bucket, each the bucket's
    micro-batches (micro_batch_s) and the optimiser step, plus the set-up constants above."""
    durations = librispeech_durations()
    total = SWEEP_PROCESS_S
    for _, p, world_size in sweep(base, cuda=True):
        n_params, accumulation = n_parameters(p), p.accumulation_steps(world_size)
        buckets = buckets_of(trained_durations(durations, p), p, world_size, n_buckets)
        step_s = [accumulation * micro_batch_s(p, gpu, b.micro_batch, b.frames) + optimizer_step_s(p, gpu, n_params)
                  for b in buckets]  # fmt: skip
        total += SWEEP_CONFIGURATION_S + (steps + 1) * sum(step_s)
    return total


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def report(rows: list[dict], label: str) -> str:
    lines = [
        f"ESTIMATE (cost model, not measured) for {label}: {rows[0]['utterances']:,} training utterances",
        "  GPUs  micro-batch x accumulation  steps/epoch  W_hh read/frame  one epoch  10 epochs  all-reduce/step",
    ]
    for r in rows:
        lines.append(
            f"  {r['gpus']:4d}  {r['micro_batch']:11d} x {r['accumulation']:<12d}  {r['steps']:11,d}  "
            f"{r['w_hh_read_us']:12.1f} us  {hours(r['epoch_s']):>9s}  {hours(r['ten_epochs_s']):>9s}  "
            f"{r['all_reduce_per_step_s'] * 1e3:8.1f} ms (overlapped)"
        )
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m bench.cost_model",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="parameters (default: the default recipe)")
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 8], help="GPU counts (default: 1 8)")
    parser.add_argument("--manifest", type=Path, help="real durations from this prepared manifest (.jsonl)")
    args = parser.parse_intermixed_args(argv)
    if min(args.gpus) < 1:
        parser.error("--gpus: each count must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)

    def run():
        p = params.parse(args.overrides)
        durations = manifest_durations(args.manifest) if args.manifest else librispeech_durations()
        rows = [estimate(p, durations, gpus) for gpus in args.gpus]
        print(report(rows, " ".join(args.overrides) or "the default recipe"))

    return exit_status.run(run)


if __name__ == "__main__":
    sys.exit(main())
