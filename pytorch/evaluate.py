"""Evaluate a trained checkpoint on a prepared split: WER, CER and throughput, with greedy decoding (the
benchmark's metric) or a beam search with an optional word n-gram LM (pytorch.decoders).

    python -m pytorch.evaluate --checkpoint results/checkpoints/best.pt --data-dir LibriSpeech_dataset --split test
    python -m pytorch.evaluate --checkpoint best.pt --split test --decoder beam --lm lm.arpa --lm-weight 0.8
    python -m pytorch.evaluate --checkpoint best.onnx --split test --backend onnxruntime

The parameters (model shape, features) come from the checkpoint; the dataset's features.json must
match them. Decoding and error counting are the trainer's own (pytorch.inference), so the WER
printed here for the validation split with the greedy decoder is the one the trainer logged for that
checkpoint. --backend runs the model in ONNX Runtime or OpenVINO instead (pytorch.backends); only the
forward pass changes, so the WER is the same on every backend. The time and throughput printed include decoding.
Exit status (exit_status.py): 0 done, 1 a missing or unusable checkpoint, manifest, features or LM, or
a predictions file that cannot be written, 2 bad usage.
"""

import argparse
import sys
from pathlib import Path

import torch

import exit_status
import params
from data import dataset_dir
from pytorch import backends, decoders, inference, loader, results


def report(result: inference.SplitResult, split: str, decoder: str = "greedy") -> str:
    """The lines a user reads: error rates, then how much audio was decoded how fast."""
    counts, seconds, audio_s, n = result.counts, result.seconds, result.audio_s, result.utterances
    return "\n".join(
        [
            f"split: {split}",
            f"decoder: {decoder}",
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
        description="Evaluate a DeepSpeech2 checkpoint on a prepared split: corpus WER, per-utterance mean "
        "WER, CER and throughput, with greedy CTC decoding (the benchmark's metric) or a beam search with "
        "an optional word n-gram LM.",
        epilog="An LM: python -m pytorch.lm (from training transcripts) or download_dataset.sh --lm (LibriSpeech's "
        "official ones); its weights: python -m pytorch.tune_lm. Exit status: 0 done, 1 missing or unusable "
        "checkpoint, manifest, features or LM, 2 bad usage.",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        help="a .pt written by training (checkpoints/best.pt or last.pt), or an .onnx from pytorch.export",
    )
    dataset_dir.add_data_dir_argument(parser)
    parser.add_argument("--split", default="val", help="val, test or any manifests/<name>.jsonl name (default: val)")
    parser.add_argument(
        "--batch-size",
        type=int,
        help="utterances per forward pass (default: the checkpoint's micro-batch on one device)",
    )
    parser.add_argument("--num-workers", type=int, help="data loader processes (default: the checkpoint's num_workers)")
    parser.add_argument(
        "--predictions", type=Path, metavar="FILE.jsonl", help="write id, reference, hypothesis per utterance"
    )
    parser.add_argument(
        "--precision", choices=params.choices("precision"), help="default: the checkpoint's; fp16 needs CUDA"
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="default: cuda if available"
    )
    parser.add_argument(
        "--threads", type=int, help="CPU threads of torch or the ONNX runtime (default: its own choice)"
    )
    backends.add_argument(parser)
    decoders.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads {args.threads}: must be at least 1")
    if args.batch_size is not None and args.batch_size < 1:
        parser.error(f"--batch-size {args.batch_size}: must be at least 1")
    if args.num_workers is not None and args.num_workers < 0:
        parser.error(f"--num-workers {args.num_workers}: must be at least 0")
    return args


def run(args) -> None:
    config = decoders.config_from_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = backends.load(args.checkpoint, args.backend, args.device, args.precision, args.threads)
    p = model.p
    loader.check_features(args.data_dir, p)
    decoder = decoders.make_decoder(config)
    batch_size = args.batch_size or p.micro_batch(1)  # as training validates: never a whole global batch at once
    workers = p.num_workers if args.num_workers is None else args.num_workers
    split = inference.split_for(model, args.data_dir, args.split)
    result = inference.evaluate_split(model, split, batch_size, workers, decoder)
    print(f"checkpoint: {args.checkpoint} (backend {model.name}, precision {p.precision})")
    print(report(result, args.split, decoder.description))
    if args.predictions:
        rows = [{"id": i, "reference": ref, "hypothesis": hyp} for i, ref, hyp in result.predictions]
        try:
            results.write_jsonl(args.predictions, rows)
        except OSError as err:
            raise exit_status.Failure(
                f"cannot write predictions: {exit_status.describe_os_error(err, args.predictions)}"
            ) from None
        print(f"predictions: {args.predictions}")


def main(argv=None) -> int:
    args = parse_args(argv)
    return exit_status.run(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
