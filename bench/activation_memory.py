"""Saved activations of a training step, per utterance-second, and the micro-batch a GPU can hold.

Counts, on any device, the bytes of every tensor autograd saves for the backward pass of one
forward (torch.autograd.graph.saved_tensors_hooks; each storage once), for utterances of two lengths,
and fits bytes = fixed + per-second x seconds x utterances. From that and the weights, gradients and
optimiser state it projects the largest micro-batch of 16.7 s and 35 s utterances per GPU memory size.

    python -m bench.activation_memory                       # the full model, fp32 and bf16, on this CPU

On CPU this counts what torch's CPU kernels save; cuDNN's RNN keeps its own workspace ("reserve")
instead, so on a GPU treat the projection as an estimate and let the trainer's start-up memory check
(pytorch.memory.check) or bench.epoch_time's peak memory say what really fits.
"""

import argparse
import dataclasses
import sys

import torch

import exit_status
import params
from data.features import frame_count
from pytorch.model import DeepSpeech2

GPU_MEMORY_GIB = (80, 141)  # H100 80 GB, H200 141 GB
DURATIONS_S = (16.7, 35.2)  # Jasper's training cut, LibriSpeech's longest utterance


def saved_bytes(model: DeepSpeech2, p: params.Params, batch: int, seconds: float) -> int:
    """Bytes autograd saves in one forward of `batch` utterances of `seconds` each (each storage once)."""
    frames = frame_count(round(seconds * p.sample_rate), p)
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    features = torch.randn(batch, p.n_features, frames)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        log_probs, _ = model(features, torch.full((batch,), frames))
    del log_probs
    return sum(storages.values())


def state_bytes(model: DeepSpeech2, optimizer: str) -> int:
    """Weights + gradients + optimiser state, float32: AdamW keeps two moments, SGD one momentum buffer."""
    weights = sum(t.numel() * 4 for t in model.parameters())
    return weights * (2 + (2 if optimizer == "adamw" else 1))


def measure(p: params.Params, seconds: tuple[float, float]) -> dict:
    torch.manual_seed(0)
    model = DeepSpeech2(p).train()
    short, long = (saved_bytes(model, p, 1, s) for s in seconds)
    per_second = (long - short) / (seconds[1] - seconds[0])
    return {
        "precision": p.precision,
        "per_utterance_second": per_second,
        "fixed": short - per_second * seconds[0],
        "state": state_bytes(model, p.optimizer),
    }


def largest_micro_batch(figures: dict, seconds: float, memory_gib: float, headroom: float = 0.9) -> int:
    """Utterances of `seconds` that fit in headroom x memory, beside the weights, gradients and optimiser state."""
    free = headroom * memory_gib * 2**30 - figures["state"] - figures["fixed"]
    return max(0, int(free // (figures["per_utterance_second"] * seconds)))


def run(args) -> None:
    base = params.parse(args.overrides)
    print(
        f"{sum(t.numel() for t in DeepSpeech2(base).parameters()):,} parameters, optimizer {base.optimizer}; "
        f"saved tensors counted on {'this CPU'} with utterances of {args.seconds[0]} and {args.seconds[1]} s"
    )
    for name in args.precisions:
        figures = measure(dataclasses.replace(base, precision=name), tuple(args.seconds))
        print(
            f"precision {name}: {figures['per_utterance_second'] / 2**20:.1f} MiB of saved activations per "
            f"utterance-second; weights + gradients + optimiser state {figures['state'] / 2**30:.2f} GiB"
        )
        for memory in GPU_MEMORY_GIB:
            fits = ", ".join(f"{largest_micro_batch(figures, s, memory)} x {s} s" for s in DURATIONS_S)
            print(f"  {memory} GB GPU (90% usable): at most {fits} per micro-batch (estimate)")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m bench.activation_memory",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="parameters (default: the full model)")
    parser.add_argument("--seconds", type=float, nargs=2, default=[1.0, 2.0], help="the two lengths (default 1 2)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=params.choices("precision"))
    args = parser.parse_intermixed_args(argv)
    if not 0 < args.seconds[0] < args.seconds[1]:
        parser.error("--seconds: two lengths, the first shorter")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    return exit_status.run(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
