"""pytorch.align: CTC forced alignment against brute force, and word times against known boundaries."""

import itertools

import numpy as np
import pytest
import torch

import params
from data import labels
from pytorch import align
from pytorch.model import DeepSpeech2


def collapse(path, blank=0) -> list[int]:
    out, previous = [], None
    for label in path:
        if label != previous and label != blank:
            out.append(label)
        previous = label
    return out


def test_viterbi_equals_the_best_of_every_alignment_on_tiny_inputs():
    """Every label path of T frames over C labels is enumerated; of those that collapse to the
    targets, the aligner's score is the best and its path is one of the best."""
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(400):
        n_labels, frames = int(rng.integers(2, 5)), int(rng.integers(1, 7))
        targets = [int(x) for x in rng.integers(1, n_labels, int(rng.integers(0, 4)))]
        if align.frames_needed(targets) > frames:
            with pytest.raises(align.AlignmentError, match="needs at least"):
                align.force_align(np.zeros((frames, n_labels)), targets)
            continue
        log_probs = np.log(rng.dirichlet(np.ones(n_labels), frames))
        scores = {
            path: log_probs[np.arange(frames), path].sum()
            for path in itertools.product(range(n_labels), repeat=frames)
            if collapse(path) == targets
        }
        best = max(scores.values())
        result = align.force_align(log_probs, targets)
        assert result.score == pytest.approx(best, abs=1e-9)
        assert scores[tuple(result.labels.tolist())] == pytest.approx(best, abs=1e-9)
        assert collapse(result.labels.tolist()) == targets
        assert np.all(np.diff(result.states) >= 0) and np.all(np.diff(result.states) <= 2)
        checked += 1
    assert checked > 250


def test_frames_needed_counts_a_blank_between_repeats():
    assert align.frames_needed([]) == 0
    assert align.frames_needed([1, 2, 3]) == 3
    assert align.frames_needed([1, 1, 2, 2]) == 6
    assert align.force_align(np.log(np.full((3, 2), 0.5)), [1, 1]).labels.tolist() == [1, 0, 1]


DEMO = params.make({"preset": "demo"})


def synthetic_utterance(words_at: list[tuple[str, int, int]], frames: int, seed: int = 0) -> torch.Tensor:
    """(T', 29) log-probabilities of a model that fires each word's letters across output frames
    first..last (each letter for a share of them, a blank in between when a letter repeats), a space
    in each gap between words and blanks elsewhere, with noise on every frame."""
    rng = np.random.default_rng(seed)
    target = np.full(frames, labels.BLANK)
    for index, (word, first, last) in enumerate(words_at):
        span = np.linspace(first, last + 1, len(word) + 1).astype(int)
        for char, start, end in zip(word, span[:-1], span[1:]):
            target[start:end] = labels.LABELS.index(char)
        for a, b in zip(word, word[1:]):
            if a == b:  # a blank between two equal letters: its share's last frame
                target[span[word.index(a) + 1] - 1] = labels.BLANK
        if index + 1 < len(words_at):
            gap = (last + words_at[index + 1][1]) // 2
            target[gap] = labels.LABELS.index(" ")
    logits = rng.normal(0, 1.0, (frames, len(labels.LABELS)))
    logits[np.arange(frames), target] += 4.0
    return torch.log_softmax(torch.from_numpy(logits).float(), dim=-1)


def test_word_times_fall_on_the_known_boundaries():
    """Words fired over known output frames come back at those frames' times, within one output
    frame (20 ms at the demo's 10 ms hop)."""
    clock = align.FrameClock.of(DEMO)
    words_at = [("THE", 5, 14), ("CAT", 22, 40), ("SAT", 48, 60), ("DOWN", 70, 95), ("TOO", 101, 112)]
    log_probs = synthetic_utterance(words_at, frames=125)
    transcript = " ".join(w for w, _, _ in words_at)
    alignment = align.force_align(log_probs, labels.encode(transcript))
    times = align.word_times(alignment, transcript, clock)
    assert [t.word for t in times] == transcript.split()
    frame_s = clock.stride * clock.hop_s
    assert frame_s == pytest.approx(0.02)
    for time, (word, first, last) in zip(times, words_at):
        assert time.start == pytest.approx(clock.start(first), abs=frame_s), word
        assert time.end == pytest.approx(clock.end(last), abs=frame_s), word
    # Output frame 0 is centred on input frame 15: 0.15 s into the audio at a 10 ms hop.
    assert clock.centre(0) == pytest.approx(0.15) and clock.start(5) == pytest.approx(0.24)


def test_the_clock_is_the_models_receptive_field():
    """An impulse in input frame k changes exactly the convolutions' output frames t with
    2t <= k <= 2t + 30, whose centre, the clock says, is input frame 2t + 15."""
    p = params.make({"preset": "tiny"})
    model = DeepSpeech2(p).eval()
    with torch.no_grad():  # positive kernels, no bias: whatever the impulse reaches, it changes
        for module in model.conv:
            if isinstance(module, torch.nn.Conv2d):
                module.weight.fill_(1.0)
                module.bias.zero_()
    clock = align.FrameClock.of(p)
    frames, k = 101, 50
    zeros = torch.zeros(1, 1, p.n_features, frames)
    impulse = zeros.clone()
    impulse[0, 0, :, k] = 1e-3
    lengths = torch.tensor([frames])
    with torch.no_grad():
        changed = (model._convs(impulse, lengths) - model._convs(zeros, lengths)).abs().sum(dim=(0, 1, 2)) > 0
    touched = torch.nonzero(changed).flatten().tolist()
    assert touched == [t for t in range(changed.numel()) if clock.stride * t <= k <= clock.stride * t + 30]
    centres = [clock.stride * t + clock.offset for t in touched]
    assert np.mean(centres) == pytest.approx(k, abs=1)


def test_odd_spaces_and_empty_transcripts():
    log_probs = np.log(np.full((8, len(labels.LABELS)), 1 / len(labels.LABELS)))
    for text in ("", " A", "A  B", "AB "):
        alignment = align.force_align(log_probs, labels.encode(text))
        spans = align.word_frames(alignment, text)
        assert [w for w, _, _ in spans] == text.split()
        assert all(first <= last for _, first, last in spans)
    with pytest.raises(align.AlignmentError):
        align.force_align(log_probs[:2], labels.encode("ABC"))
