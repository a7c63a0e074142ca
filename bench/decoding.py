"""Decoding quality and speed on a prepared split: greedy, beam search without an LM, and beam search
with a word n-gram LM, from the same model output, on this CPU.

    python -m bench.decoding --checkpoint best.pt --data-dir DIR --split val --lm lm.arpa --lm-weight 1 --word-score 2

The model runs once over the split (its time is printed apart); then each decoder decodes every
utterance, --repeats times, the decoders taking turns in a rotating order so that a change in the
machine's load falls on all of them alike (paired runs). Per decoder: corpus WER and CER (the same on
every repeat), the median decoding time with its spread (min-max) over the repeats, utterances/s,
the real-time factor (decoding seconds per audio second) and its inverse, "x real time". The load
averages before and after are printed: on a shared machine they say how far to trust the figures.
--threads 1 (the default) measures one core: flashlight-text's search is single-threaded and torch
is held to one thread. Exit status: 0 done, 1 an unusable checkpoint, dataset or LM, 2 bad usage.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import exit_status
from data import dataset_dir
from pytorch import decoders, inference, loader, results
from pytorch.beam import BeamOptions

COLUMNS = ["decoder", "WER (%)", "CER (%)", "decode s (median)", "spread (min-max)", "utt/s", "RTF", "x real time"]


def time_decoders(emissions, named: dict[str, decoders.Decoder], repeats: int) -> dict[str, dict]:
    """{name: {"wer", "cer", "seconds": [per repeat]}}: every decoder over every emission, `repeats`
    times, in a rotating order (repeat r starts with decoder r mod k)."""
    names = list(named)
    out = {name: {"seconds": []} for name in names}
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            start = time.perf_counter()
            counts, _ = inference.decode_emissions(emissions, named[name])
            out[name]["seconds"].append(time.perf_counter() - start)
            out[name] |= {"wer": counts.wer, "cer": counts.cer, "word_edits": counts.word_edits, "words": counts.words}
    return out


def summarise(name: str, measured: dict, utterances: int, audio_s: float) -> dict:
    seconds = measured["seconds"]
    median = statistics.median(seconds)
    return {
        "decoder": name,
        "wer": measured["wer"],
        "cer": measured["cer"],
        "word_edits": measured["word_edits"],
        "words": measured["words"],
        "seconds": seconds,
        "median_s": median,
        "min_s": min(seconds),
        "max_s": max(seconds),
        "utterances_per_s": utterances / median,
        "rtf": median / audio_s,
        "times_real_time": audio_s / median,
    }


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = [r["decoder"], f"{r['wer']:.2f}", f"{r['cer']:.2f}", f"{r['median_s']:.2f}"]
        cells += [f"{r['min_s']:.2f}-{r['max_s']:.2f}", f"{r['utterances_per_s']:.0f}", f"{r['rtf']:.5f}"]
        cells += [f"{r['times_real_time']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv):
    defaults = BeamOptions()
    parser = argparse.ArgumentParser(
        prog="python -m bench.decoding",
        description="WER and decoding speed of greedy, beam search without LM and beam search with a word "
        "n-gram LM on a prepared split, from one model pass, timed in paired (rotating) repeats.",
        epilog="Tune --lm-weight and --word-score first (python -m pytorch.tune_lm) on another split. "
        "Exit status: 0 done, 1 an unusable checkpoint, dataset or LM, 2 bad usage.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="a .pt written by training")
    dataset_dir.add_data_dir_argument(parser)
    parser.add_argument("--split", default="val", help="the split to decode (default: val)")
    parser.add_argument("--lm", type=Path, metavar="FILE", help="word n-gram LM for the third row (default: none)")
    parser.add_argument("--lexicon", type=Path, metavar="FILE", help="the LM's words (default: the ARPA's unigrams)")
    parser.add_argument("--lm-weight", type=float, default=defaults.lm_weight, help="default %(default)s")
    parser.add_argument("--word-score", type=float, default=defaults.word_score, help="default %(default)s")
    parser.add_argument("--beam-size", type=int, default=defaults.beam_size, help="default %(default)s")
    parser.add_argument("--beam-threshold", type=float, default=defaults.beam_threshold, help="default %(default)s")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per decoder (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: one core)")
    parser.add_argument("--batch-size", type=int, help="utterances per forward pass (default: the checkpoint's)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the setup and rows as JSON")
    args = parser.parse_args(argv)
    for name in ("repeats", "threads", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} {value}: must be at least 1")
    return args


def run(args) -> None:
    options = BeamOptions(args.beam_size, args.beam_threshold, args.lm_weight, args.word_score)
    decoders.check_beam_options(options)
    model, p = inference.load_model(args.checkpoint, "cpu")
    loader.check_features(args.data_dir, p)
    named: dict[str, decoders.Decoder] = {
        "greedy": decoders.GreedyDecoder(),
        "beam, no LM": decoders.BeamDecoder(options),
    }
    if args.lm is not None:
        lm_decoder = decoders.make_decoder(decoders.DecoderConfig("beam", options, args.lm, args.lexicon))
        named[f"beam + LM ({args.lm.name})"] = lm_decoder
    load_before = os.getloadavg()
    split = inference.split_for(model, args.data_dir, args.split)
    emissions, forward_s = inference.split_emissions(model, split, args.batch_size or p.micro_batch(1), 0)
    audio_s = sum(e.audio_s for e in emissions)
    measured = time_decoders(emissions, named, args.repeats)
    load_after = os.getloadavg()
    rows = [summarise(name, measured[name], len(emissions), audio_s) for name in named]
    print(
        f"split {args.split}: {len(emissions)} utterances, {audio_s:.1f} s of audio; {torch.get_num_threads()} "
        f"torch thread(s); model forward {forward_s:.1f} s (RTF {forward_s / audio_s:.4f}, not in the table)"
    )
    for name, decoder in named.items():
        print(f"  {name}: {decoder.description}")
    print(markdown_table(rows))
    print(
        f"load average (1, 5, 15 min) before {', '.join(f'{x:.2f}' for x in load_before)}, "
        f"after {', '.join(f'{x:.2f}' for x in load_after)}; {os.cpu_count()} CPUs"
    )
    if args.json:
        setup = {
            "checkpoint": str(args.checkpoint),
            "split": args.split,
            "utterances": len(emissions),
            "audio_s": audio_s,
            "forward_s": forward_s,
            "threads": torch.get_num_threads(),
            "repeats": args.repeats,
            "load_before": load_before,
            "load_after": load_after,
            "decoders": {name: d.description for name, d in named.items()},
        }
        results.write_json(args.json, {**setup, "rows": rows})


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    return exit_status.run(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
