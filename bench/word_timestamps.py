"""How close pytorch.transcribe's word timestamps come to the truth, on speech whose word boundaries
are known: synthetic sentences (the grammar's test pool, never in training) spoken one word at a
time by espeak-ng, each recording kept with the 0.1 s of quiet around it that the corpus keeps
(synthetic.corpus.speak), and joined, so each word's first and last audible sample (at or above
the corpus's silence level) is known.

    python -m bench.word_timestamps --checkpoint best.pt [--sentences 40] [--decoder beam --lm lm.arpa ...]

Each sentence goes through the real path (a 16 kHz FLAC, pytorch.transcribe's features, the model,
the decoder, the forced alignment); each word the transcript got right (difflib's matching of the
two word sequences) has its start and end compared with the truth. Prints the median signed error
(a bias: CTC tends to fire after a sound begins), the median and 90th percentile of the error sizes,
and how often the true word's middle lies inside the predicted span. Words spoken alone are not the
connected speech the model learnt: the figures say how well the times follow the audio, not the WER.
Exit status: 0 done, 1 an unusable checkpoint or LM, or espeak-ng failing, 2 bad usage.
"""

import argparse
import difflib
import random
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch

import exit_status
from pytorch import align, decoders, inference, results, transcribe
from synthetic.corpus import PITCH, SILENCE_LEVEL, SPEED, VOICES, Utterance, speak
from synthetic.sentences import sentences

RATE = 16_000


@dataclass(frozen=True)
class KnownWord:
    word: str
    start: float  # s: the first sample at or above SILENCE_LEVEL
    end: float  # s: just past the last such sample


def audible(samples: np.ndarray) -> tuple[int, int]:
    """(first, one past the last) sample of an int16 recording at or above the corpus's silence level."""
    loud = np.flatnonzero(np.abs(samples.astype(np.float32) / 32768) >= SILENCE_LEVEL)
    return (int(loud[0]), int(loud[-1]) + 1) if loud.size else (0, 0)


def join_words(recordings: list[np.ndarray], words: list[str]) -> tuple[np.ndarray, list[KnownWord]]:
    """The words' recordings, their quiet margins kept (no click where a word starts), one after the
    other -> (int16 samples, each word's audible span)."""
    known, position = [], 0
    for word, recording in zip(words, recordings):
        first, last = audible(recording)
        known.append(KnownWord(word, (position + first) / RATE, (position + last) / RATE))
        position += len(recording)
    return np.concatenate(recordings), known


def speak_sentence(text: str, rng: random.Random, uid: str) -> tuple[np.ndarray, list[KnownWord]]:
    """One sentence spoken a word at a time by one random synthetic voice."""
    voice, speed, pitch = rng.choice(VOICES), rng.randint(*SPEED), rng.randint(*PITCH)
    words = text.split()
    batch = [Utterance(f"{uid}-{i}", word, voice, speed, pitch) for i, word in enumerate(words)]
    return join_words(speak(batch), words)


def matched(predicted: list[align.WordTime], truth: list[KnownWord]) -> list[tuple[align.WordTime, KnownWord]]:
    """The (predicted, true) pairs of the words the transcript got right: the equal runs of the two
    word sequences' longest matching (difflib), so one wrong word does not cost its neighbours."""
    matcher = difflib.SequenceMatcher(a=[w.word for w in predicted], b=[t.word for t in truth], autojunk=False)
    return [
        (predicted[block.a + k], truth[block.b + k])
        for block in matcher.get_matching_blocks()
        for k in range(block.size)
    ]


def errors(pairs: list[tuple[align.WordTime, KnownWord]]) -> list[tuple[float, float, bool]]:
    """(start error, end error, true middle inside the predicted span) per pair; errors in seconds,
    predicted minus true (positive: the prediction is late)."""
    return [(p.start - t.start, p.end - t.end, p.start <= (t.start + t.end) / 2 <= p.end) for p, t in pairs]


def summary(signed: list[float]) -> str:
    """Median of the signed errors (the bias), and the median and 90th percentile of their sizes, in ms."""
    sizes = np.abs(signed)
    return (
        f"median {statistics.median(signed) * 1000:+.0f} ms; |error| median {np.median(sizes) * 1000:.0f} ms, "
        f"p90 {np.percentile(sizes, 90) * 1000:.0f} ms"
    )


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m bench.word_timestamps",
        description="Word timestamps (CTC forced alignment) against known word boundaries: synthetic "
        "sentences spoken word by word by espeak-ng, joined with silences.",
        epilog="Only sentences whose transcript has the right words are compared. Exit status: 0 done, "
        "1 an unusable checkpoint or LM or espeak-ng failing, 2 bad usage.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="a .pt written by training")
    parser.add_argument("--sentences", type=int, default=40, help="sentences to speak (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="sentences, voices and gaps (default %(default)s)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every word's times as JSON")
    decoders.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.sentences < 1:
        parser.error(f"--sentences {args.sentences}: must be at least 1")
    return args


def run(args) -> None:
    config = decoders.config_from_args(args)
    model, p = inference.load_model(args.checkpoint, "cpu")
    decoder = decoders.make_decoder(config)
    clock = align.FrameClock.of(p)
    rng = random.Random(args.seed)
    compared, rows, exact = [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for number, text in enumerate(sentences("test", args.sentences, args.seed)):
            samples, truth = speak_sentence(text, rng, f"s{number}")
            path = Path(tmp) / f"{number}.flac"
            soundfile.write(path, samples, RATE, format="FLAC", subtype="PCM_16")
            features = transcribe.features_of(path, p, model.feature_stats())
            log_probs = transcribe.log_probs_of(model, features, "cpu")
            hypothesis, _, words = transcribe.timed_transcript(log_probs, decoder, clock, len(samples) / RATE)
            exact += hypothesis.split() == text.split()
            compared += errors(matched(words, truth))
            rows.append(
                {
                    "text": text,
                    "hypothesis": hypothesis,
                    "truth": [t.__dict__ for t in truth],
                    "predicted": [w.as_json() for w in words],
                }
            )
    inside = sum(e[2] for e in compared)
    print(f"decoder: {decoder.description}; model output frame {clock.stride * clock.hop_s * 1000:.0f} ms")
    print(f"sentences: {len(rows)}, recognised word for word: {exact}; words right and compared: {len(compared)}")
    if compared:
        for name, values in (("start", [e[0] for e in compared]), ("end", [e[1] for e in compared])):
            print(f"{name} error (predicted - true): {summary(values)}")
        print(f"true middle inside the predicted span: {inside}/{len(compared)} ({100 * inside / len(compared):.1f}%)")
    else:
        print("no word was recognised: nothing to compare (is the checkpoint trained?)")
    if args.json:
        results.write_json(args.json, {"decoder": decoder.description, "sentences": rows})


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    return exit_status.run(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
