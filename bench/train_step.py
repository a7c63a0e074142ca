"""Training-step throughput of a configuration on this machine, next to what its GEMMs can do.

A step is the trainer's own (pytorch.train.train_step: forward, CTC, backward, clipping, optimiser)
on a synthetic batch of p.batch_size random utterances of --utt-seconds each (loader.Batch.synthetic).
Printed: step time, utt/s, audio-s/s, the model's achieved GFLOP/s (counted analytically) and torch.mm's GFLOP/s
measured in the same run, and their ratio (efficiency).

    python -m bench.train_step preset=demo                    # the demo (fp32)
    python -m bench.train_step preset=demo precision=bf16 --steps 5
"""

import argparse
import sys
import time

import torch

import exit_status
import params
from pytorch import distributed, loader, train
from pytorch.model import CONV1, CONV2, DeepSpeech2, conv_frequencies, output_lengths

GATES = {"gru": 3, "lstm": 4, "rnn": 1}


def forward_macs(p: params.Params, frames: int) -> int:
    """Multiply-accumulates of one forward pass over one utterance of `frames` feature frames."""
    (k1f, k1t), (s1f, s1t) = CONV1
    (k2f, k2t), _ = CONV2
    f1 = (p.n_features - k1f) // s1f + 1
    t1 = (frames - k1t) // s1t + 1
    f2 = conv_frequencies(p.n_features)
    t2 = int(output_lengths(torch.tensor([frames]))[0])
    conv = p.conv_channels * k1f * k1t * f1 * t1 + p.conv_channels * p.conv_channels * k2f * k2t * f2 * t2
    directions = 2 if p.bidirectional else 1
    rnn, inputs = 0, p.conv_channels * f2
    for _ in range(p.hidden_layers):
        # per frame and direction: the input and the hidden matmul of every gate
        rnn += directions * GATES[p.rnn_type] * p.hidden_size * (inputs + p.hidden_size) * t2
        inputs = p.hidden_size
    head = p.hidden_size * 29 * t2
    return conv + rnn + head


def time_steps(p: params.Params, seconds: float, steps: int, budget_s: float) -> list[float]:
    """Seconds of each training step after one warm-up step; stops at `steps` or after budget_s."""
    world = distributed.single("cuda" if torch.cuda.is_available() else "cpu")
    trainer = train.build_trainer(p, world, total_steps=steps + 1)
    frames = 1 + round(seconds * p.sample_rate) // p.hop_length
    batch = loader.Batch.synthetic(p.batch_size, p.n_features, frames, torch.Generator().manual_seed(p.seed))
    times, start_all = [], time.perf_counter()
    for step in range(steps + 1):
        sync(world.device)
        start = time.perf_counter()
        train.train_step(trainer, [batch], p.batch_size)
        sync(world.device)
        if step > 0:
            times.append(time.perf_counter() - start)
        if step > 0 and time.perf_counter() - start_all > budget_s:
            break
    return times


def sync(device: torch.device) -> None:
    # CUDA runs asynchronously: without a barrier we would time the launch, not the work.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_gflops(dtype: torch.dtype, size: int = 1024, repeats: int = 10) -> float:
    """torch.mm GFLOP/s of (size x size) @ (size x size) in dtype on the training device."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.mm(a, b)
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m bench.train_step",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up (default: %(default)s)")
    parser.add_argument(
        "--seconds", type=float, default=120.0, help="stop timing after this long (default: %(default)s)"
    )
    parser.add_argument(
        "--utt-seconds", type=float, default=3.0, help="duration of each synthetic utterance (default: %(default)s)"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="parameters, e.g. preset=demo precision=fp32")
    args = parser.parse_intermixed_args(argv)
    if args.steps < 1 or args.seconds <= 0 or args.utt_seconds <= 0:
        parser.error("--steps must be >= 1, --seconds and --utt-seconds > 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    return exit_status.run(lambda: run(args))


def run(args) -> None:
    p = params.parse(args.overrides)
    frames = 1 + round(args.utt_seconds * p.sample_rate) // p.hop_length
    step_flops = 3 * 2 * forward_macs(p, frames) * p.batch_size  # x2 FLOPs per MAC, x3 forward + backward
    times = time_steps(p, args.utt_seconds, args.steps, args.seconds)
    step_s = sorted(times)[len(times) // 2]
    achieved = step_flops / step_s / 1e9
    parameters = sum(t.numel() for t in DeepSpeech2(p).parameters())
    print(
        f"config: preset={p.preset or '-'} precision={p.precision} batch={p.batch_size} x {args.utt_seconds:g} s, "
        f"{parameters:,} parameters, {torch.get_num_threads()} threads, {len(times)} timed steps"
    )
    print(
        f"step time (median): {step_s:.3f} s   utt/s: {p.batch_size / step_s:.1f}   "
        f"audio-s/s: {p.batch_size * args.utt_seconds / step_s:.1f}"
    )
    print(f"model FLOPs per step: {step_flops / 1e9:.2f} GFLOP   achieved: {achieved:.2f} GFLOP/s")
    dtypes = [("fp32", torch.float32)] + ([("bf16", torch.bfloat16)] if p.precision == "bf16" else [])
    dtypes += [("fp16", torch.float16)] if p.precision == "fp16" else []
    for name, dtype in dtypes:
        peak = gemm_gflops(dtype)
        print(f"torch.mm {name}: {peak:.2f} GFLOP/s   efficiency (achieved / mm): {achieved / peak:.1%}")


if __name__ == "__main__":
    sys.exit(main())
