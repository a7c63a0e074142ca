"""Word timestamps by CTC forced alignment: the most probable label path (Viterbi) that spells a given
transcript through the model's log-probabilities, the first and last frame of each word on it, and
the time of each model output frame.

    alignment = force_align(log_probs (T, C), labels.encode(transcript))
    words = word_times(alignment, transcript, FrameClock.of(p))   # [WordTime(word, start, end)] in s

The path is over CTC's extended target (a blank before, between and after the labels): a frame
stays on its state, moves to the next, or skips a blank between two different labels. A word runs
from the first frame of its first letter to the last frame of its last letter; blank frames around
it (CTC's "I don't know yet") belong to no word. That is why the times are tight around where the
model fires, and why they are only as good as the model: each label is seen at its output frame,
20 ms apart at the default 10 ms hop.
"""

from dataclasses import dataclass

import numpy as np
import torch

import exit_status
from data.labels import BLANK
from pytorch.model import CONV1, CONV2


class AlignmentError(exit_status.Failure):
    """The transcript needs more frames than the model's output has."""


@dataclass(frozen=True)
class Alignment:
    """The best path: per frame its state in the extended target (even: a blank, odd 2k+1: label k of
    the targets), the label it emits, and the path's log-probability."""

    states: np.ndarray  # (T,) int64
    labels: np.ndarray  # (T,) int64
    score: float


def frames_needed(targets: list[int]) -> int:
    """The fewest frames a CTC path spelling `targets` takes: one per label, plus a blank between repeats."""
    return len(targets) + sum(a == b for a, b in zip(targets, targets[1:]))


def force_align(log_probs, targets: list[int], blank: int = BLANK) -> Alignment:
    """The Viterbi alignment of `targets` (label indices, no blank) to log_probs (T, C).

    AlignmentError when T is too short for the targets. Ties go to the path staying longest in
    earlier states (a deterministic choice).
    """
    lp = log_probs.detach().cpu().double().numpy() if isinstance(log_probs, torch.Tensor) else np.asarray(log_probs)
    frames = lp.shape[0]
    if frames < frames_needed(targets):
        raise AlignmentError(
            f"the transcript needs at least {frames_needed(targets)} output frames, the model gave {frames}"
        )
    extended = np.full(2 * len(targets) + 1, blank, dtype=np.int64)
    extended[1::2] = targets
    n_states = len(extended)
    # A skip (s-2 -> s) is allowed into a label that differs from the label two states back.
    can_skip = np.zeros(n_states, dtype=bool)
    can_skip[2:] = (extended[2:] != blank) & (extended[2:] != extended[:-2])
    if frames == 0:
        return Alignment(np.zeros(0, np.int64), np.zeros(0, np.int64), 0.0)
    score = np.full(n_states, -np.inf)
    score[0] = lp[0, extended[0]]
    if n_states > 1:
        score[1] = lp[0, extended[1]]
    back = np.zeros((frames, n_states), dtype=np.int8)  # how many states back each best step came from
    for t in range(1, frames):
        choices = np.full((3, n_states), -np.inf)  # from the same state, the one before, two before
        choices[0] = score
        choices[1, 1:] = score[:-1]
        choices[2, 2:] = np.where(can_skip[2:], score[:-2], -np.inf)
        back[t] = np.argmax(choices, axis=0)  # argmax takes the first of equals: stay before step before skip
        score = choices[back[t], np.arange(n_states)] + lp[t, extended]
    last = n_states - 1 if n_states == 1 or score[-1] >= score[-2] else n_states - 2
    best = float(score[last])
    states = np.empty(frames, dtype=np.int64)
    states[-1] = last
    for t in range(frames - 1, 0, -1):
        states[t - 1] = states[t] - back[t, states[t]]
    return Alignment(states, extended[states], best)


@dataclass(frozen=True)
class FrameClock:
    """Where each model output frame sits in the audio. Output frame t is computed from input
    frames 2t .. 2t+30 (the two convolutions' time kernels and strides, pytorch.model), centred on
    input frame 2t+15, whose STFT window is centred on sample hop * (2t+15)."""

    hop_s: float  # seconds between input feature frames
    stride: int  # input frames per output frame
    offset: int  # input frame at the centre of output frame 0

    @classmethod
    def of(cls, p) -> "FrameClock":
        (_, k1), (_, s1) = CONV1
        (_, k2), (_, s2) = CONV2
        return cls(p.hop_length / p.sample_rate, s1 * s2, (k1 - 1) // 2 + s1 * ((k2 - 1) // 2))

    def centre(self, frame: int) -> float:
        return (self.stride * frame + self.offset) * self.hop_s

    def start(self, frame: int) -> float:
        """Where output frame `frame`'s share of the audio begins (half a stride before its centre)."""
        return max(0.0, self.centre(frame) - self.stride * self.hop_s / 2)

    def end(self, frame: int) -> float:
        return self.centre(frame) + self.stride * self.hop_s / 2


@dataclass(frozen=True)
class WordTime:
    word: str
    start: float  # s
    end: float  # s
    first_frame: int
    last_frame: int

    def as_json(self) -> dict:
        return {"word": self.word, "start": round(self.start, 3), "end": round(self.end, 3)}


def word_frames(alignment: Alignment, transcript: str) -> list[tuple[str, int, int]]:
    """(word, first frame, last frame) of each word of the transcript the alignment spells (words:
    runs of characters between single spaces; alignment.states index its characters)."""
    characters = np.where(alignment.states % 2 == 1, alignment.states // 2, -1)  # (T,) character index or -1
    spans, start = [], 0
    for word in transcript.split(" "):
        end = start + len(word)  # characters start .. end-1 are the word's
        frames = np.flatnonzero((characters >= start) & (characters < end))
        if word and len(frames):
            spans.append((word, int(frames[0]), int(frames[-1])))
        start = end + 1  # past the space
    return spans


def word_times(
    alignment: Alignment, transcript: str, clock: FrameClock, audio_s: float | None = None
) -> list[WordTime]:
    """Each word's start and end in seconds (clipped to the audio's length when given)."""
    words = []
    for word, first, last in word_frames(alignment, transcript):
        start, end = clock.start(first), clock.end(last)
        if audio_s is not None:
            start, end = min(start, audio_s), min(end, audio_s)
        words.append(WordTime(word, start, end, first, last))
    return words
