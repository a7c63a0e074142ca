"""Evaluate a trained checkpoint on a prepared split: WER, CER and throughput with greedy decoding.

    python -m pytorch.evaluate --checkpoint results/checkpoints/best.pt --data-dir LibriSpeech_dataset --split test

The parameters (model shape, features) come from the checkpoint; the dataset's features.json must
match them. Decoding and error counting are the trainer's own (pytorch.train.evaluate), so the
WER printed here for the validation split is the one the trainer logged for that checkpoint.
Exit status: 0 done, 1 predictions file not writable, 2 missing or unusable checkpoint, manifest or
features.
"""

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

import params
from pytorch import checkpoint, loader, results, train
from pytorch.model import DeepSpeech2

EXIT_USAGE = 2


def load_model(path, device, precision: str | None = None) -> tuple[DeepSpeech2, params.Params]:
    """(model in eval mode on device, its Params) from a checkpoint written by pytorch.checkpoint,
    with the autocast precision replaced when one is given (None: the checkpoint's).

    Raises checkpoint.CheckpointError naming the file when it is missing, unreadable or does not
    hold a model of its own parameters, and params.ParamError for fp16 without CUDA.
    """
    path = Path(path)
    if not path.is_file():
        raise checkpoint.CheckpointError(f"{path}: no such checkpoint file")
    state = checkpoint.load(path)
    try:
        p = params.make(state["params"])
        model = DeepSpeech2(p)
        model.load_state_dict(state["model"])
    except KeyError as err:
        raise checkpoint.CheckpointError(f"{path}: checkpoint lacks the entry {err}") from None
    except (params.ParamError, RuntimeError, ValueError, TypeError) as err:
        raise checkpoint.CheckpointError(f"{path}: checkpoint does not hold a usable model: {err}") from None
    if precision is not None:
        p = dataclasses.replace(p, precision=precision)
    train.check_precision(p.precision, torch.device(device))
    return model.to(device).eval(), p


def evaluate_split(model, p: params.Params, data_dir, split: str, batch_size: int, num_workers: int, device) -> dict:
    """Greedy-decode manifests/<split>.jsonl -> {counts: ErrorCounts, predictions, utterances, audio_s, seconds}."""
    rows, dataset = train.open_split(Path(data_dir), split, p)
    batches = loader.global_batches(len(rows), batch_size, False, p.seed, 0)
    data_loader = loader.make_loader(dataset, batches, num_workers, pin_memory=torch.device(device).type == "cuda")
    world = train.World(rank=0, size=1, device=torch.device(device))
    start = time.perf_counter()
    counts, predictions = train.evaluate(model, rows, data_loader, p, world)
    if world.device.type == "cuda":
        torch.cuda.synchronize(world.device)
    seconds = time.perf_counter() - start
    audio_s = sum(row["duration"] for row in rows)
    return {
        "counts": counts,
        "predictions": predictions,
        "utterances": len(rows),
        "audio_s": audio_s,
        "seconds": seconds,
    }


def report(result: dict, split: str) -> str:
    """The lines a user reads: error rates, then how much audio was decoded how fast."""
    counts, seconds, audio_s, n = result["counts"], result["seconds"], result["audio_s"], result["utterances"]
    return "\n".join(
        [
            f"split: {split}",
            f"WER (corpus): {counts.wer:.2f}%  ({counts.word_edits} edits / {counts.words} words)",
            f"WER (per-utterance mean, as the 2018 code): {counts.wer_per_utterance_mean:.2f}%",
            f"CER: {counts.cer:.2f}%",
            f"utterances: {n}",
            f"audio: {audio_s:.1f} s",
            f"time: {seconds:.2f} s",
            f"throughput: {n / seconds:.1f} utt/s, {audio_s / seconds:.1f} audio-s/s, "
            f"real-time factor {seconds / audio_s if audio_s else float('nan'):.4f}",
        ]
    )


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m pytorch.evaluate",
        description="Evaluate a DeepSpeech2 checkpoint on a prepared split with greedy CTC decoding: "
        "corpus WER, per-utterance mean WER, CER and throughput.",
        epilog="Exit status: 0 done, 2 missing or unusable checkpoint, manifest or features.",
    )
    parser.add_argument(
        "--checkpoint", required=True, type=Path, help="a .pt written by training (checkpoints/best.pt or last.pt)"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path("LibriSpeech_dataset"), help="prepared dataset (default: %(default)s)"
    )
    parser.add_argument("--split", default="val", help="val, test or any manifests/<name>.jsonl name (default: val)")
    parser.add_argument(
        "--batch-size", type=int, help="utterances per forward pass (default: the checkpoint's batch_size)"
    )
    parser.add_argument("--num-workers", type=int, help="data loader processes (default: the checkpoint's num_workers)")
    parser.add_argument(
        "--predictions", type=Path, metavar="FILE.jsonl", help="write id, reference, hypothesis per utterance"
    )
    parser.add_argument(
        "--precision", choices=params.choices("precision"), help="autocast (default: the checkpoint's; fp16 needs CUDA)"
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="default: cuda if available"
    )
    args = parser.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        parser.error(f"--batch-size {args.batch_size}: must be at least 1")
    if args.num_workers is not None and args.num_workers < 0:
        parser.error(f"--num-workers {args.num_workers}: must be at least 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        model, p = load_model(args.checkpoint, args.device, args.precision)
        loader.check_features(args.data_dir, p)
        batch_size = args.batch_size or p.batch_size
        workers = p.num_workers if args.num_workers is None else args.num_workers
        result = evaluate_split(model, p, args.data_dir, args.split, batch_size, workers, args.device)
    except (checkpoint.CheckpointError, loader.LoaderError, train.TrainError, params.ParamError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"checkpoint: {args.checkpoint} ({sum(t.numel() for t in model.parameters()):,} parameters, "
        f"precision {p.precision})"
    )
    print(report(result, args.split))
    if args.predictions:
        rows = [{"id": i, "reference": ref, "hypothesis": hyp} for i, ref, hyp in result["predictions"]]
        try:
            results.write_jsonl(args.predictions, rows)
        except OSError as err:
            print(f"error: {args.predictions}: cannot write predictions: {err}", file=sys.stderr)
            return 1
        print(f"predictions: {args.predictions}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
