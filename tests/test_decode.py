import random

import jiwer
import pytest
import torch

from data.labels import LABELS
from pytorch.decode import ErrorCounts, greedy_decode


def one_hot_path(path: str) -> torch.Tensor:
    """A (T, 29) log-prob matrix whose best label at frame t is path[t] ('_' = blank)."""
    log_probs = torch.full((len(path), len(LABELS)), -5.0)
    for t, char in enumerate(path):
        log_probs[t, LABELS.index(char)] = -0.1
    return log_probs


def test_greedy_decode_collapses_repeats_and_drops_blanks():
    paths = ["__HHE_LL_LLO__ WW_ORLD", "A_A__AA B'"]
    frames = max(map(len, paths))
    batch = torch.full((frames, 2, len(LABELS)), -5.0)
    for n, path in enumerate(paths):
        batch[: len(path), n] = one_hot_path(path)
        batch[len(path) :, n, LABELS.index("Z")] = 0.0  # padding that must not be decoded
    lengths = torch.tensor([len(p) for p in paths])
    assert greedy_decode(batch, lengths) == ["HELLO WORLD", "AAA B'"]


def test_greedy_decode_zero_length_is_empty():
    assert greedy_decode(one_hot_path("AB")[:, None], torch.tensor([0])) == [""]


@pytest.mark.parametrize(
    "ref, hyp, word_edits, char_edits",
    [
        ("THE CAT SAT", "THE CAT SAT", 0, 0),
        ("THE CAT SAT", "THE BAT SAT", 1, 1),  # substitution
        ("THE CAT SAT", "THE CAT SAT ON", 1, 3),  # insertion
        ("THE CAT SAT", "THE SAT", 1, 4),  # deletion
        ("THE CAT SAT", "", 3, 11),  # empty hypothesis
        ("THE  CAT ", "THE CAT", 0, 0),  # white space runs are one separator
    ],
)
def test_hand_cases(ref, hyp, word_edits, char_edits):
    counts = ErrorCounts()
    counts.add(ref, hyp)
    assert (counts.word_edits, counts.char_edits) == (word_edits, char_edits)
    assert counts.words == len(ref.split())
    assert counts.wer == pytest.approx(100 * word_edits / len(ref.split()))
    assert counts.wer_per_utterance_mean == pytest.approx(counts.wer)


def test_empty_reference():
    counts = ErrorCounts()
    counts.add("", "")
    assert (counts.words, counts.wer, counts.wer_per_utterance_mean, counts.cer) == (0, 0.0, 0.0, 0.0)
    counts.add("", "UH UM")
    assert (counts.words, counts.word_edits, counts.wer, counts.wer_per_utterance_mean) == (0, 2, 100.0, 50.0)


def test_corpus_wer_differs_from_mean_of_utterances():
    counts = ErrorCounts()
    counts.add("A", "B")  # 1 edit / 1 word: 100 %
    counts.add("A B C D E F G H I J", "A B C D E F G H I J")  # 0 / 10
    assert counts.wer == pytest.approx(100 / 11)
    assert counts.wer_per_utterance_mean == pytest.approx(50.0)


def random_pairs(count: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    vocab = ["A", "AN", "THE", "CAT", "DOG'S", "RAN", "AWAY", "QUICKLY", "I", "Z"]
    pairs = []
    for _ in range(count):
        ref = [rng.choice(vocab) for _ in range(rng.randint(1, 12))]
        hyp = list(ref)
        for _ in range(rng.randint(0, 4)):
            action, where = rng.choice("sid"), rng.randint(0, len(hyp))
            if action == "i" or not hyp:
                hyp.insert(where, rng.choice(vocab))
            elif action == "s":
                hyp[min(where, len(hyp) - 1)] = rng.choice(vocab)
            else:
                del hyp[min(where, len(hyp) - 1)]
        pairs.append((" ".join(ref), " ".join(hyp) or "Z"))
    return pairs


def test_agrees_with_jiwer():
    pairs = random_pairs(200, seed=3)
    counts = ErrorCounts()
    for ref, hyp in pairs:
        counts.add(ref, hyp)
    refs, hyps = zip(*pairs)
    assert counts.wer == pytest.approx(100 * jiwer.wer(list(refs), list(hyps)))
    assert counts.cer == pytest.approx(100 * jiwer.cer(list(refs), list(hyps)))
    per_utterance = [100 * jiwer.wer(r, h) for r, h in pairs]
    assert counts.wer_per_utterance_mean == pytest.approx(sum(per_utterance) / len(pairs))
    assert 0 < counts.wer < 100


def test_merge_and_tensor_round_trip_equal_single_accumulation():
    pairs = random_pairs(30, seed=4)
    whole, first, second = ErrorCounts(), ErrorCounts(), ErrorCounts()
    for i, (ref, hyp) in enumerate(pairs):
        whole.add(ref, hyp)
        (first if i % 3 else second).add(ref, hyp)
    summed = ErrorCounts.from_tensor(first.as_tensor() + second.as_tensor())
    assert same(summed, whole)
    assert first.merge(second) is first and same(first, whole)


def same(a: ErrorCounts, b: ErrorCounts) -> bool:
    """Equal counts; the WER sum only up to float summation order."""
    return (a.word_edits, a.words, a.char_edits, a.chars, a.utterances) == (
        b.word_edits,
        b.words,
        b.char_edits,
        b.chars,
        b.utterances,
    ) and a.wer_sum == pytest.approx(b.wer_sum)
