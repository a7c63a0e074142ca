"""CTC beam search over the model's log-probabilities, with an optional word n-gram language model:
flashlight-text's decoders (C++, with KenLM inside the wheel), driven one utterance at a time.

Without an LM the search is lexicon-free: any spelling can come out, as with greedy decoding, and
the beam only adds the probability of other label paths. With an LM it is lexicon-constrained: the
LM is a word n-gram model (the official LibriSpeech ones, or one from `python -m pytorch.lm`), so
hypotheses are spelled through a trie of the LM's words and each word is scored by the LM when its
last letter is reached. A lexicon-free search with a word LM would score partial words that the LM
cannot know (a character-level LM would be needed); constraining to the vocabulary is what word LMs
are for, and with the official 200,000-word vocabulary it costs little (LibriSpeech's test sets
are about 0.3-0.6 % out of vocabulary). Words the model's labels cannot spell are left out.

The lexicon is the LM's own unigrams (read from the ARPA file) unless a --lexicon file is given,
which a KenLM binary needs: KenLM binaries do not list their words.

flashlight-text is pinned in requirements.txt for x86_64 Python 3.10-3.12 (its wheels); elsewhere
the beam decoder stops with a message saying so, and greedy decoding works as before.
"""

import contextlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

import exit_status
from data import labels
from data.labels import BLANK, LABELS
from pytorch import lm as arpa

SPACE = LABELS.index(" ")
KENLM_BINARY_MAGIC = b"mmap lm "  # every KenLM binary starts so ("mmap lm http://kheafield.com/code ...")
# What KenLM prints on every load; any other line it prints is a warning about the file.
_KENLM_CHATTER = ("Loading the LM will be faster if you build a binary file.", "Reading ", "----5---10---15")


class DecoderUnavailable(exit_status.Failure):
    """flashlight-text is not installed (or has no wheel for this platform)."""


class LanguageModelError(exit_status.Failure):
    """An LM or lexicon file that cannot be loaded; the message names it."""


def flashlight():
    """flashlight-text's decoder and dictionary modules, or DecoderUnavailable saying how to get them."""
    try:
        from flashlight.lib.text import decoder, dictionary
        from flashlight.lib.text.decoder.kenlm import KenLM
    except ImportError as err:
        raise DecoderUnavailable(
            f"--decoder beam needs flashlight-text ({err}): pip install flashlight-text==0.0.7 "
            "(wheels for x86_64 Linux, Python 3.10-3.12; requirements.txt installs it there)"
        ) from None
    return decoder, dictionary, KenLM


@contextlib.contextmanager
def captured_stderr():
    """Capture what C++ code writes to file descriptor 2 inside the block; yields a list that holds
    the captured lines afterwards."""
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines += sink.read().decode("utf-8", errors="replace").splitlines()


def kenlm_warnings(lines: list[str]) -> list[str]:
    """The lines of KenLM's load output that are not its usual progress chatter."""
    return [
        line.strip("*").strip()
        for line in lines
        if line.strip("*").strip() and not line.startswith(_KENLM_CHATTER) and set(line.strip()) != {"*"}
    ]


def is_kenlm_binary(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(KENLM_BINARY_MAGIC)) == KENLM_BINARY_MAGIC


def read_lexicon(path: Path) -> list[str]:
    """The words of a lexicon or vocabulary file: the first field of each line, upper-cased
    (librispeech-vocab.txt: one word a line; librispeech-lexicon.txt: the word, then its phonemes)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise LanguageModelError(f"--lexicon {path}: cannot read it ({err})") from None
    words = list(dict.fromkeys(line.split()[0].upper() for line in text.splitlines() if line.split()))
    if not words:
        raise LanguageModelError(f"--lexicon {path}: holds no words")
    return words


def spellable(word: str) -> bool:
    """Whether the model's labels can spell the word (letters and apostrophe; no space)."""
    try:
        labels.check(word)
    except labels.UnknownCharacter:
        return False
    return bool(word) and " " not in word


@dataclass
class LanguageModel:
    """A loaded word LM with the trie of its spellable words, ready for the lexicon decoder."""

    path: Path
    kenlm: object  # flashlight's KenLM
    words: object  # flashlight Dictionary: word index -> word; the last entry is <unk>
    trie: object
    unknown: int  # the word index of <unk>
    vocabulary: int  # words in the trie
    unspellable: int  # lexicon words left out: the labels cannot spell them
    warnings: list[str]


def load_language_model(path: Path, lexicon: Path | None = None) -> LanguageModel:
    """Load an ARPA (plain or .gz) or KenLM binary LM and build the trie of its words (the ARPA's
    unigrams, or `lexicon`'s words). LanguageModelError naming the file when it cannot be used."""
    decoder, dictionary, KenLM = flashlight()
    path = Path(path)
    if not path.is_file():
        raise LanguageModelError(f"--lm {path}: no such file")
    if lexicon is not None:
        candidates = read_lexicon(lexicon)
    elif is_kenlm_binary(path):
        raise exit_status.UsageError(
            f"--lm {path} is a KenLM binary, which does not list its words: give --lexicon FILE "
            "(e.g. librispeech-vocab.txt, or the text the LM was built from)"
        )
    else:
        try:
            candidates = arpa.read_vocabulary(path)
        except arpa.LMError as err:
            raise LanguageModelError(f"--lm {err}") from None
    words = [w for w in dict.fromkeys(candidates) if spellable(w)]
    if not words:
        raise LanguageModelError(f"--lm {path}: none of its {len(candidates)} words can be spelled with the labels")
    word_dict = dictionary.Dictionary([*words, arpa.UNKNOWN])
    with captured_stderr() as chatter:
        try:
            model = KenLM(str(path), word_dict)
        except RuntimeError as err:
            reason = str(err).splitlines()[-1] if str(err) else "KenLM could not read it"
            raise LanguageModelError(f"--lm {path}: not a usable ARPA or KenLM binary file: {reason}") from None
    trie = decoder.Trie(len(LABELS), SPACE)
    start = model.start(False)
    for index, word in enumerate(words):
        _, score = model.score(start, index)
        trie.insert(labels.encode(word), index, score)
    trie.smear(decoder.SmearingMode.MAX)  # look-ahead: a prefix scores as its best completion's unigram
    return LanguageModel(
        path, model, word_dict, trie, len(words), len(words), len(candidates) - len(words), kenlm_warnings(chatter)
    )


@dataclass(frozen=True)
class BeamOptions:
    """What a beam search keeps and how an LM weighs in (the --beam-* and --lm-* options)."""

    beam_size: int = 32  # hypotheses kept per frame
    beam_threshold: float = 25.0  # hypotheses scoring this far (natural log) below the best are dropped
    lm_weight: float = 0.5  # times the LM's log-probability (natural log) of each word
    word_score: float = 0.0  # added per word: counters the LM's preference for few words


class BeamSearch:
    """Decode (T, N, C) log-probabilities with a CTC beam search, with `lm` (lexicon-constrained) or
    without (lexicon-free). One flashlight decoder, reused utterance by utterance: not thread-safe."""

    def __init__(self, options: BeamOptions, lm: LanguageModel | None = None):
        decoder, _, _ = flashlight()
        self.options, self.lm = options, lm
        ctc = decoder.CriterionType.CTC
        tokens = len(LABELS)
        if lm is None:
            opts = decoder.LexiconFreeDecoderOptions(
                beam_size=options.beam_size,
                beam_size_token=tokens,
                beam_threshold=options.beam_threshold,
                lm_weight=0.0,
                sil_score=0.0,
                log_add=True,  # merge label paths of one transcript by summing: CTC's prefix probability
                criterion_type=ctc,
            )
            self._decoder = decoder.LexiconFreeDecoder(opts, decoder.ZeroLM(), SPACE, BLANK, [])
        else:
            opts = decoder.LexiconDecoderOptions(
                beam_size=options.beam_size,
                beam_size_token=tokens,
                beam_threshold=options.beam_threshold,
                lm_weight=options.lm_weight,
                word_score=options.word_score,
                unk_score=-math.inf,  # no word outside the lexicon
                sil_score=0.0,
                log_add=True,
                criterion_type=ctc,
            )
            self._decoder = decoder.LexiconDecoder(opts, lm.trie, lm.kenlm, SPACE, BLANK, lm.unknown, [], False)

    def decode(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """log_probs (T, N, C), lengths (N,) -> N transcripts."""
        emissions = log_probs.detach().to("cpu", torch.float32).transpose(0, 1)  # (N, T, C)
        return [self.decode_one(emissions[n, :length]) for n, length in enumerate(lengths.tolist())]

    def decode_one(self, emissions: torch.Tensor) -> str:
        """One utterance's (T, C) float32 log-probabilities -> its best transcript."""
        frames = emissions.shape[0]
        if frames == 0:
            return ""
        emissions = emissions.contiguous()
        best = self._decoder.decode(emissions.data_ptr(), frames, emissions.shape[1])[0]
        if self.lm is not None:
            return " ".join(self.lm.words.get_entry(w) for w in best.words if w >= 0)
        return collapse(best.tokens[1:-1])  # the decoder pads the path with one token at each end


def collapse(path) -> str:
    """A CTC label path -> its transcript: repeats merged, blanks dropped (as greedy decoding)."""
    out, previous = [], None
    for label in path:
        if label != previous and label != BLANK:
            out.append(LABELS[label])
        previous = label
    return "".join(out)
