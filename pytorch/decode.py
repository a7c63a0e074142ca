"""Greedy CTC decoding and word/character error counts that sum across processes.

Two WERs are kept apart on purpose:
- `wer`: corpus WER = 100 * all word edits / all reference words, the number the reference README
  defines and the stop rule (target_wer) uses;
- `wer_per_utterance_mean`: the mean of per-utterance WERs, what the 2018 code actually computed.
Empty references: they add 0 words; the per-utterance WER of an empty reference is 0 if the
hypothesis is empty too, else 100. An empty corpus (no reference words) has WER 0 if there were
no edits, else 100; the same rule holds for characters.
"""

from dataclasses import astuple, dataclass, fields

import Levenshtein
import torch

from data.labels import BLANK, LABELS


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
    """log_probs (T, N, C), lengths (N,) -> N transcripts: best label per frame, repeats merged, blanks dropped."""
    best = log_probs.argmax(dim=-1).t().cpu()  # (N, T); one device transfer for the whole batch
    texts = []
    for path, length in zip(best, lengths.tolist()):
        labels = torch.unique_consecutive(path[:length])
        texts.append("".join(LABELS[i] for i in labels.tolist() if i != BLANK))
    return texts


def _rate(edits: float, total: float) -> float:
    if total == 0:
        return 0.0 if edits == 0 else 100.0
    return 100.0 * edits / total


@dataclass
class ErrorCounts:
    """Edit counts of (reference, hypothesis) pairs; merge or all-reduce as_tensor() to combine."""

    word_edits: int = 0
    words: int = 0
    char_edits: int = 0
    chars: int = 0
    utterances: int = 0
    wer_sum: float = 0.0  # sum of per-utterance WERs (%)

    def add(self, reference: str, hypothesis: str) -> None:
        """Count one utterance; white space runs count as one word separator."""
        ref_words, hyp_words = reference.split(), hypothesis.split()
        edits = Levenshtein.distance(ref_words, hyp_words)
        ref_chars, hyp_chars = " ".join(ref_words), " ".join(hyp_words)
        self.word_edits += edits
        self.words += len(ref_words)
        self.char_edits += Levenshtein.distance(ref_chars, hyp_chars)
        self.chars += len(ref_chars)
        self.utterances += 1
        self.wer_sum += _rate(edits, len(ref_words))

    def merge(self, other: "ErrorCounts") -> "ErrorCounts":
        """Add other's counts into self; returns self."""
        for field in fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))
        return self

    def as_tensor(self, device=None) -> torch.Tensor:
        """(6,) float64, for torch.distributed.all_reduce(SUM); exact for counts below 2**53."""
        return torch.tensor(astuple(self), dtype=torch.float64, device=device)

    @classmethod
    def from_tensor(cls, values: torch.Tensor) -> "ErrorCounts":
        """Inverse of as_tensor()."""
        *counts, wer_sum = values.detach().cpu().tolist()
        return cls(*(round(c) for c in counts), wer_sum)

    @property
    def wer(self) -> float:
        """Corpus WER (%): all word edits / all reference words."""
        return _rate(self.word_edits, self.words)

    @property
    def wer_per_utterance_mean(self) -> float:
        """Mean of per-utterance WERs (%), as the 2018 reference code computed it."""
        return self.wer_sum / self.utterances if self.utterances else 0.0

    @property
    def cer(self) -> float:
        """Corpus CER (%): all character edits (spaces included) / all reference characters."""
        return _rate(self.char_edits, self.chars)
