"""Tune a beam search's LM weights on a prepared split: lm_weight (how much the LM counts) and
word_score (a bonus per word, against the LM's taste for few words), over a grid or a seeded random
sample, each point decoded from the same model output.

    python -m pytorch.tune_lm --checkpoint best.pt --data-dir DIR --split val --lm lm.arpa
    python -m pytorch.tune_lm ... --random 30 --seed 0 --lm-weight-range 0,3 --word-score-range -3,3

The model runs once over the split (pytorch.inference.split_emissions); every point then only
decodes. Prints each point as it is done, a table best first, the greedy and LM-free beam WERs of the
same split for comparison, and the options to use. Tune on one split and report on another (the
demo: tune on val, report on a test split): weights picked on a split fit that split best.
Exit status: 0 done, 1 an unusable checkpoint, dataset or LM, 2 bad usage.
"""

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

import exit_status
import params
from data import dataset_dir
from pytorch import decoders, inference, loader, results
from pytorch.beam import BeamOptions
from pytorch.decode import ErrorCounts

# Wide enough that the demo's best (lm_weight 3, word_score 0 on its val split) is inside, not on an edge.
DEFAULT_LM_WEIGHTS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0)
DEFAULT_WORD_SCORES = (-2.0, -1.0, 0.0, 1.0, 2.0)


@dataclass(frozen=True)
class Trial:
    lm_weight: float
    word_score: float
    wer: float
    cer: float
    word_edits: int
    words: int


def grid(lm_weights, word_scores) -> list[tuple[float, float]]:
    return [(a, b) for a in lm_weights for b in word_scores]


def random_points(count: int, seed: int, lm_weight_range, word_score_range) -> list[tuple[float, float]]:
    """`count` points drawn uniformly from the two ranges, the same for the same seed."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(*lm_weight_range, size=count)
    b = rng.uniform(*word_score_range, size=count)
    return [(round(float(x), 4), round(float(y), 4)) for x, y in zip(a, b)]


def search(
    emissions: list[inference.Emission], decoder: decoders.BeamDecoder, points: list[tuple[float, float]]
) -> list[Trial]:
    """Decode the emissions at each (lm_weight, word_score) -> the trials, best first (WER, then CER,
    then the smaller weights: a tie goes to the LM that counts least)."""
    trials = []
    for number, (lm_weight, word_score) in enumerate(points, 1):
        counts, _ = inference.decode_emissions(emissions, decoder.with_weights(lm_weight, word_score))
        trials.append(trial_of(lm_weight, word_score, counts))
        print(
            f"[{number}/{len(points)}] lm_weight {lm_weight:g}, word_score {word_score:g}: "
            f"WER {counts.wer:.2f}%, CER {counts.cer:.2f}%",
            flush=True,
        )
    return sorted(trials, key=lambda t: (t.wer, t.cer, t.lm_weight, abs(t.word_score)))


def trial_of(lm_weight: float, word_score: float, counts: ErrorCounts) -> Trial:
    return Trial(lm_weight, word_score, counts.wer, counts.cer, counts.word_edits, counts.words)


def edge_notes(best: Trial, points: list[tuple[float, float]]) -> list[str]:
    """A note for each weight whose best value is the largest or smallest tried: the optimum may lie beyond."""
    notes = []
    for name, value, tried in (
        ("lm_weight", best.lm_weight, [a for a, _ in points]),
        ("word_score", best.word_score, [b for _, b in points]),
    ):
        if len(set(tried)) > 1 and value in (min(tried), max(tried)):
            edge = "largest" if value == max(tried) else "smallest"
            notes.append(f"note: the best {name}, {value:g}, is the {edge} tried: widen the search past it")
    return notes


def markdown_table(trials: list[Trial], rows: int) -> str:
    lines = ["| lm_weight | word_score | WER (%) | CER (%) |", "|---|---|---|---|"]
    lines += [f"| {t.lm_weight:g} | {t.word_score:g} | {t.wer:.2f} | {t.cer:.2f} |" for t in trials[:rows]]
    return "\n".join(lines)


def _number_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers") from None
    if not values or not all(np.isfinite(values)):
        raise argparse.ArgumentTypeError(f"{text!r}: expected finite numbers")
    return values


def _range(text: str) -> tuple[float, float]:
    values = _number_list(text)
    if len(values) != 2 or values[0] > values[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LOW,HIGH with LOW <= HIGH")
    return values[0], values[1]


def parse_args(argv):
    defaults = BeamOptions()
    parser = argparse.ArgumentParser(
        prog="python -m pytorch.tune_lm",
        description="Search the beam search's lm_weight and word_score on a prepared split (grid, or seeded "
        "random) and print the best with its WER, beside the greedy and LM-free beam WERs.",
        epilog="The model runs once; each point only decodes. Tune on one split and report on another. "
        "Exit status: 0 done, 1 an unusable checkpoint, dataset or LM, 2 bad usage.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="a .pt written by training")
    dataset_dir.add_data_dir_argument(parser)
    parser.add_argument("--split", default="val", help="the split to tune on (default: val)")
    parser.add_argument("--lm", required=True, type=Path, metavar="FILE", help="word n-gram LM (ARPA or KenLM binary)")
    parser.add_argument("--lexicon", type=Path, metavar="FILE", help="the LM's words (default: the ARPA's unigrams)")
    parser.add_argument("--beam-size", type=int, default=defaults.beam_size, help="default %(default)s")
    parser.add_argument("--beam-threshold", type=float, default=defaults.beam_threshold, help="default %(default)s")
    parser.add_argument(
        "--lm-weights",
        type=_number_list,
        default=list(DEFAULT_LM_WEIGHTS),
        help=f"grid: lm_weight values (default {','.join(map(str, DEFAULT_LM_WEIGHTS))})",
    )
    parser.add_argument(
        "--word-scores",
        type=_number_list,
        default=list(DEFAULT_WORD_SCORES),
        help=f"grid: word_score values (default {','.join(map(str, DEFAULT_WORD_SCORES))})",
    )
    parser.add_argument("--random", type=int, metavar="N", help="instead of the grid: N random points")
    parser.add_argument("--seed", type=int, default=0, help="--random's seed (default 0)")
    parser.add_argument("--lm-weight-range", type=_range, default=(0.0, 3.0), help="--random: LOW,HIGH (default 0,3)")
    parser.add_argument(
        "--word-score-range", type=_range, default=(-3.0, 3.0), help="--random: LOW,HIGH (default -3,3)"
    )
    parser.add_argument("--batch-size", type=int, help="utterances per forward pass (default: the checkpoint's)")
    parser.add_argument("--num-workers", type=int, help="data loader processes (default: the checkpoint's)")
    parser.add_argument("--rows", type=int, default=15, help="table rows to print (default %(default)s)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every trial and the best as JSON")
    parser.add_argument(
        "--precision", choices=params.choices("precision"), help="default: the checkpoint's; fp16 needs CUDA"
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="default: cuda if available"
    )
    args = parser.parse_args(argv)
    for name in ("batch_size", "random", "rows"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} {value}: must be at least 1")
    if args.num_workers is not None and args.num_workers < 0:
        parser.error(f"--num-workers {args.num_workers}: must be at least 0")
    return args


def run(args) -> None:
    options = BeamOptions(args.beam_size, args.beam_threshold)
    decoders.check_beam_options(options)
    model, p = inference.load_model(args.checkpoint, args.device, args.precision)
    loader.check_features(args.data_dir, p)
    beam = decoders.make_decoder(decoders.DecoderConfig("beam", options, args.lm, args.lexicon))
    split = inference.split_for(model, args.data_dir, args.split)
    batch_size = args.batch_size or p.micro_batch(1)
    workers = p.num_workers if args.num_workers is None else args.num_workers
    emissions, forward_s = inference.split_emissions(model, split, batch_size, workers)
    audio_s = sum(e.audio_s for e in emissions)
    print(f"split {args.split}: {len(emissions)} utterances, {audio_s:.1f} s of audio (model: {forward_s:.1f} s)")
    print(f"decoder: {decoders.describe_beam(options, beam.lm, weights=False)}; lm_weight and word_score searched")
    greedy, _ = inference.decode_emissions(emissions, decoders.GreedyDecoder())
    no_lm, _ = inference.decode_emissions(emissions, decoders.BeamDecoder(options))
    print(f"greedy: WER {greedy.wer:.2f}%, CER {greedy.cer:.2f}%; beam without LM: WER {no_lm.wer:.2f}%", flush=True)
    if args.random:
        points = random_points(args.random, args.seed, args.lm_weight_range, args.word_score_range)
    else:
        points = grid(args.lm_weights, args.word_scores)
    trials = search(emissions, beam, points)
    best = trials[0]
    print(markdown_table(trials, args.rows))
    print(
        f"best on {args.split}: --lm-weight {best.lm_weight:g} --word-score {best.word_score:g}: WER {best.wer:.2f}% "
        f"(greedy {greedy.wer:.2f}%, beam without LM {no_lm.wer:.2f}%), CER {best.cer:.2f}%"
    )
    for note in edge_notes(best, points):
        print(note)
    if args.json:
        record = {
            "split": args.split,
            "utterances": len(emissions),
            "decoder": decoders.describe_beam(options, beam.lm, weights=False),
            "greedy": {"wer": greedy.wer, "cer": greedy.cer},
            "beam_without_lm": {"wer": no_lm.wer, "cer": no_lm.cer},
            "best": asdict(best),
            "trials": [asdict(t) for t in trials],
        }
        results.write_json(args.json, record)


def main(argv=None) -> int:
    args = parse_args(argv)
    return exit_status.run(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
