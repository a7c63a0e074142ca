"""Inference latency of the acoustic model per backend, batch size and utterance duration (after NVIDIA
Jasper), and with --data-dir the WER and throughput of each backend on a real split: the online RNN-T
project's side-by-side table of PyTorch, ONNX Runtime and OpenVINO.

The model alone is timed: inputs are random features of the given duration (a padded batch of
identical lengths), so neither audio decoding nor feature extraction nor CTC decoding is counted,
unless --decoder greedy|beam is given: then each timed step is the forward pass and the decoding
of its output (pytorch.decoders; a beam search's time depends on how peaked the output is, so time
it with --checkpoint, whose output is a trained model's, and see bench.decoding for real speech).
Weights are random unless --checkpoint is given; the model's latency does not depend on their values.
Every backend runs the same model (pytorch.backends: the ONNX ones on its parity-checked export), and
"x torch" is a row's audio-seconds per second over PyTorch's at the same batch and duration.

    python -m bench.inference_latency                       # preset=demo, the default grid
    python -m bench.inference_latency preset=tiny --batch-sizes 1,2 --durations 0.5 --iterations 3
    python -m bench.inference_latency --checkpoint best.pt --data-dir D --split val \
        --backends torch,onnxruntime,openvino --threads 2 --full
"""

import argparse
import dataclasses
import os
import statistics
import sys
import time

import numpy as np
import torch

import exit_status
import params
from data.features import frame_count
from pytorch import backends, decoders, inference, loader, precision, results
from pytorch.inference import load_model
from pytorch.model import DeepSpeech2

PERCENTILES = (50, 90, 95, 99)
COLUMNS = (
    ["model", "backend", "batch", "duration (s)", "avg (ms)"]
    + [f"p{q} (ms)" for q in PERCENTILES]
    + ["utt/s", "audio-s/s", "x torch"]
)
SPLIT_COLUMNS = ["model", "backend", "split", "WER (%)", "utterances", "audio (s)", "time (s)", "audio-s/s", "x torch"]


def frames_for(duration: float, p: params.Params) -> int:
    """Feature frames of `duration` seconds of audio (centred STFT frames: 1 + samples // hop)."""
    return frame_count(round(duration * p.sample_rate), p)


@dataclasses.dataclass(frozen=True)
class Repeats:
    """How often each grid point runs: untimed warm-up passes, then timed ones."""

    warmup: int
    iterations: int


def time_forward(
    model, p: params.Params, batch: int, duration: float, repeats: Repeats, decoder: decoders.Decoder | None = None
) -> list[float]:
    """Seconds per forward pass of a (batch, n_features, frames) input on the model's device (and the
    decoding of its output by `decoder`, when given), `repeats.iterations` times after `repeats.warmup`.

    The model computes in its own precision (p.precision; pytorch.precision)."""
    device = inference.device_of(model)
    frames = frames_for(duration, p)
    features = torch.randn(batch, p.n_features, frames, device=device)
    lengths = torch.full((batch,), frames, dtype=torch.long)
    times = []
    with torch.inference_mode():
        for step in range(repeats.warmup + repeats.iterations):
            _sync(device)
            start = time.perf_counter()
            log_probs, out_lengths = model(features, lengths)
            if decoder is not None:
                decoder.decode(log_probs, out_lengths)  # on the host: its result waits for the device
            _sync(device)
            if step >= repeats.warmup:
                times.append(time.perf_counter() - start)
    return times


def _sync(device) -> None:
    # CUDA kernels run asynchronously: without a barrier we would time the launch, not the work.
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def summarise(label: str, batch: int, duration: float, times: list[float], backend: str = "torch") -> dict:
    """Latency statistics in ms and throughput of one grid point."""
    ms = np.asarray(times) * 1000.0
    mean_s = statistics.fmean(times)
    row = {"model": label, "backend": backend, "batch": batch, "duration_s": duration, "iterations": len(times)}
    row["avg_ms"] = float(ms.mean())
    row |= {f"p{q}_ms": float(np.percentile(ms, q)) for q in PERCENTILES}
    row |= {"utterances_per_s": batch / mean_s, "audio_s_per_s": batch * duration / mean_s}
    return row


def add_ratios(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """Each row's audio_s_per_s over the torch row with the same `keys` -> "x_torch" (None without one)."""
    torch_rows = {tuple(r[k] for k in keys): r for r in rows if r["backend"] == "torch"}
    for r in rows:
        base = torch_rows.get(tuple(r[k] for k in keys))
        r["x_torch"] = r["audio_s_per_s"] / base["audio_s_per_s"] if base else None
    return rows


def _ratio(r: dict) -> str:
    return f"{r['x_torch']:.2f}" if r.get("x_torch") is not None else "-"


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = [r["model"], r["backend"], str(r["batch"]), f"{r['duration_s']:g}", f"{r['avg_ms']:.1f}"]
        cells += [f"{r[f'p{q}_ms']:.1f}" for q in PERCENTILES]
        cells += [f"{r['utterances_per_s']:.1f}", f"{r['audio_s_per_s']:.1f}", _ratio(r)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def split_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(SPLIT_COLUMNS) + " |", "|" + "---|" * len(SPLIT_COLUMNS)]
    for r in rows:
        cells = [r["model"], r["backend"], r["split"], f"{r['wer']:.2f}", str(r["utterances"]), f"{r['audio_s']:.1f}"]
        cells += [f"{r['seconds']:.2f}", f"{r['audio_s_per_s']:.1f}", _ratio(r)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _number_list(kind):
    def convert(text: str) -> list:
        try:
            values = [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated {kind.__name__}s") from None
        if not values or any(v <= 0 for v in values):
            raise argparse.ArgumentTypeError(f"{text!r}: expected positive {kind.__name__}s")
        return values

    return convert


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m bench.inference_latency",
        description="Time the DeepSpeech2 forward pass per backend, batch size and duration; print a markdown "
        "table (--backends torch,onnxruntime,openvino: side by side, 'x torch' the throughput ratio).",
        epilog="Parameters are key=value words as for training (default preset=demo). Latency is of the "
        "model's forward pass only (eval mode, torch.inference_mode), on random input features; with "
        "--checkpoint and --data-dir each backend also decodes a real split (WER, audio-s/s).",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="model parameters (see params.py)")
    parser.add_argument("--batch-sizes", type=_number_list(int), default=[1, 2, 4, 8, 16], help="default 1,2,4,8,16")
    parser.add_argument(
        "--durations", type=_number_list(float), default=[2.0, 7.0, 16.7], help="seconds; default 2,7,16.7"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per grid point (default 1)")
    parser.add_argument("--iterations", type=int, default=5, help="timed steps per grid point (default 5)")
    parser.add_argument(
        "--precision", choices=params.choices("precision"), default="fp32", help="the model's precision (default fp32)"
    )
    parser.add_argument("--checkpoint", help="take weights and parameters from this checkpoint (no key=value then)")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="default: cuda if available"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", metavar="FILE", help="also write the setup and rows as JSON to FILE")
    parser.add_argument(
        "--full",
        action="store_true",
        help="also time the full-size model (default params, random weights) at batch 1 on each backend",
    )
    parser.add_argument(
        "--full-durations", type=_number_list(float), default=[2.0, 7.0], help="seconds, for --full (default 2,7)"
    )
    parser.add_argument(
        "--backends",
        type=_backend_list,
        default=["torch"],
        help=f"comma-separated, side by side in one run: {','.join(backends.BACKENDS)} (default torch)",
    )
    parser.add_argument(
        "--data-dir", help="with --checkpoint: also decode this prepared dataset's --split on every backend (WER)"
    )
    parser.add_argument("--split", default="val", help="the split --data-dir decodes (default val)")
    parser.add_argument(
        "--split-batch-size", type=int, default=1, help="utterances per forward pass over the split (default 1)"
    )
    decoders.add_arguments(parser, default=None)
    args = parser.parse_intermixed_args(argv)
    if args.warmup < 0 or args.iterations < 1:
        parser.error("--warmup must be >= 0 and --iterations >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads {args.threads}: must be at least 1")
    if args.checkpoint and args.overrides:
        parser.error("give either --checkpoint or key=value parameters, not both")
    if args.data_dir and not args.checkpoint:
        parser.error("--data-dir needs --checkpoint: a WER of random weights says nothing")
    if args.split_batch_size < 1:
        parser.error(f"--split-batch-size {args.split_batch_size}: must be at least 1")
    if args.precision != "fp32" and args.backends != ["torch"]:
        parser.error(f"--precision {args.precision}: the ONNX backends run the float32 export; use --precision fp32")
    return args


def _backend_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in backends.BACKENDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: expected some of {', '.join(backends.BACKENDS)}")
    return list(dict.fromkeys(names))


def build_model(args):
    """(model in eval mode on args.device, its Params, a label for the table)."""
    if args.checkpoint:
        model, p = load_model(args.checkpoint, args.device, args.precision)
        return model, p, os.path.basename(args.checkpoint)
    words = args.overrides if any(w.startswith("preset=") for w in args.overrides) else ["preset=demo", *args.overrides]
    p = dataclasses.replace(params.parse(words), precision=args.precision)
    precision.check(p.precision, torch.device(args.device))
    torch.manual_seed(p.seed)
    return DeepSpeech2(p).to(args.device).eval(), p, " ".join(words)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return exit_status.run(lambda: run(args))


def run(args) -> None:
    config = decoders.config_from_args(args)
    model, p, label = build_model(args)
    decoder = decoders.make_decoder(config) if config is not None else None
    if decoder is not None:
        label += f" + {config.kind} decoding"
    n_params = sum(t.numel() for t in model.parameters())
    print(
        f"device {args.device}, {torch.get_num_threads()} threads, precision {args.precision}, "
        f"{label}: {n_params:,} parameters, {p.n_features} features, backends {', '.join(args.backends)}"
    )
    if decoder is not None:
        print(f"decoder: {decoder.description}")
    runners = backends.from_model(model, p, args.backends, args.threads)
    rows, repeats = [], Repeats(args.warmup, args.iterations)
    for duration in args.durations:
        for batch in args.batch_sizes:
            for name, runner in runners.items():
                times = time_forward(runner, p, batch, duration, repeats, decoder)
                rows.append(summarise(label, batch, duration, times, name))
                print(f"  {name:12s} batch {batch:3d} x {duration:g} s: {rows[-1]['avg_ms']:.1f} ms", flush=True)
    if args.full:
        rows += time_full_size(args)
    print(markdown_table(add_ratios(rows, ("model", "batch", "duration_s"))))
    split_rows = decode_split(args, runners, label) if args.data_dir else []
    if split_rows:
        print(split_table(add_ratios(split_rows, ("model",))))
    if args.json:
        setup = {
            "device": str(args.device),
            "threads": torch.get_num_threads(),
            "precision": args.precision,
            "parameters": n_params,
            "decoder": decoder.description if decoder is not None else None,
            "backends": args.backends,
        }
        results.write_json(args.json, {**setup, "params": p.to_dict(), "rows": rows, "split_rows": split_rows})


def time_full_size(args) -> list[dict]:
    """The full-size model (default params, random weights) at batch 1 x --full-durations on every backend."""
    full_p = params.make({"precision": args.precision})
    torch.manual_seed(full_p.seed)
    full = DeepSpeech2(full_p).to(args.device).eval()
    rows = []
    for name, runner in backends.from_model(full, full_p, args.backends, args.threads).items():
        for duration in args.full_durations:
            times = time_forward(runner, full_p, 1, duration, Repeats(warmup=1, iterations=args.iterations))
            rows.append(summarise("full size (defaults)", 1, duration, times, name))
            print(f"  full size {name:12s} batch 1 x {duration:g} s: {rows[-1]['avg_ms']:.1f} ms", flush=True)
    return rows


def decode_split(args, runners: dict, label: str) -> list[dict]:
    """Each backend's greedy WER and throughput (data loading and decoding included) over the split."""
    runner = next(iter(runners.values()))
    loader.check_features(args.data_dir, runner.p)
    split = inference.split_for(runner, args.data_dir, args.split)
    rows = []
    for name, runner in runners.items():
        result = inference.evaluate_split(runner, split, args.split_batch_size, num_workers=0)
        rows.append(
            {
                "model": label,
                "backend": name,
                "split": args.split,
                "wer": result.counts.wer,
                "utterances": result.utterances,
                "audio_s": result.audio_s,
                "seconds": result.seconds,
                "audio_s_per_s": result.audio_s / result.seconds,
            }
        )
        print(f"  {name:12s} {args.split}: WER {result.counts.wer:.2f}% in {result.seconds:.1f} s", flush=True)
    return rows


if __name__ == "__main__":
    sys.exit(main())
