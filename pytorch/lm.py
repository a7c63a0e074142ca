"""Word n-gram language models in the ARPA format: built from text with interpolated modified
Kneser-Ney smoothing, written as ARPA, and their vocabulary read back.

    python -m pytorch.lm --order 3 --out lm.arpa TEXT_FILE...              # one sentence per line
    python -m pytorch.lm --order 3 --out lm.arpa --data-dir DIR --split train   # a prepared split's transcripts

The smoothing is Chen & Goodman's interpolated modified Kneser-Ney, as KenLM's lmplz computes it:
  - counts: the highest order uses raw counts; a lower-order n-gram uses its continuation count (how
    many distinct words precede it), except one that starts with <s>, which nothing can precede and
    which keeps its raw count;
  - discounts D1, D2, D3+ per order from that order's counts of counts t1..t4:
    Y = t1 / (t1 + 2 t2), Dk = k - (k + 1) Y t(k+1) / tk. Where some tk is 0 or a Dk falls outside
    (0, k), as on a small corpus, they fall back to 0.5, 1, 1.5 (lmplz's --discount_fallback) and say so;
  - p(w | h) = (a(h w) - D(a(h w))) / a(h .) + gamma(h) p(w | h'), h' the context less its first
    word, gamma(h) = (D1 N1(h .) + D2 N2(h .) + D3 N3+(h .)) / a(h .); the unigrams interpolate with
    the uniform distribution over the vocabulary (every word, </s> and <unk>; <unk> gets only that
    share). gamma(h) is exactly the ARPA backoff weight of h, so the file gives the same probabilities.

Pure Python (a dict of tuples per order): a few seconds for the demo's 12,000 transcripts, about a
minute and a few GB of memory for LibriSpeech's 281,241 training transcripts. Words are upper-cased,
as the model's labels are. Text is never taken from a held-out split: that would make the decoder
know the answers.
"""

import argparse
import gzip
import math
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import exit_status
from data.files import replacing

SENTENCE_START, SENTENCE_END, UNKNOWN = "<s>", "</s>", "<unk>"
RESERVED = (SENTENCE_START, SENTENCE_END, UNKNOWN)
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # lmplz's --discount_fallback defaults
NEVER = -99.0  # log10 probability written for <s>, which the model never predicts (SRILM's and KenLM's convention)
MAX_ORDER = 6
# Splits whose transcripts must never reach a language model: the held-out ones (data.librispeech.SPLITS).
HELD_OUT_PREFIXES = ("val", "test", "dev-")


class LMError(exit_status.Failure):
    """A text or ARPA file that cannot be read or used; the message names the file (and line)."""


# ---------------------------------------------------------------- reading text


def sentences_of_file(path: Path) -> Iterator[list[str]]:
    """The words of each non-empty line of a text file, upper-cased; LMError naming file:line on a
    reserved token (<s>, </s>, <unk>) or a file that is not UTF-8."""
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                tokens = line.split()
                if not tokens:
                    continue
                reserved = [w for w in tokens if w.lower() in RESERVED]
                if reserved:
                    raise LMError(f"{path}:{number}: holds the reserved token {reserved[0]!r}; remove it from the text")
                yield [w.upper() for w in tokens]
    except UnicodeDecodeError as err:
        raise LMError(f"{path}: not UTF-8 text ({err})") from None
    except OSError as err:
        raise LMError(f"cannot read {exit_status.describe_os_error(err, path)}") from None


def sentences_of_split(data_dir: Path, split: str) -> Iterator[list[str]]:
    """The transcripts of manifests/<split>.jsonl of a prepared dataset, as word lists."""
    if split.startswith(HELD_OUT_PREFIXES):
        raise exit_status.UsageError(
            f"--split {split}: a held-out split; build the language model from training text only "
            "(its transcripts would otherwise be in the LM that decodes them)"
        )
    from data.dataset_dir import DatasetDir  # here: building from text files needs no dataset
    from data.manifest import Manifest

    manifest = Manifest.read(DatasetDir(data_dir).existing_manifest(split))
    for i in range(len(manifest)):
        words = manifest.transcript(i).split()
        if words:
            yield words


# ---------------------------------------------------------------- counting and smoothing


def count_ngrams(sentences: Iterable[list[str]], order: int) -> list[Counter]:
    """Raw counts of every n-gram, n = 1..order, of the sentences padded with one <s> and one </s>:
    counts[n - 1][(w1, ..., wn)]."""
    counts = [Counter() for _ in range(order)]
    for words in sentences:
        tokens = (SENTENCE_START, *words, SENTENCE_END)
        for n in range(1, order + 1):
            counter = counts[n - 1]
            for i in range(len(tokens) - n + 1):
                counter[tokens[i : i + n]] += 1
    return counts


def adjusted_counts(counts: list[Counter]) -> list[dict]:
    """Kneser-Ney's counts: raw at the highest order and for n-grams starting with <s>; elsewhere the
    number of distinct words seen before the n-gram. The unigram <s> is left out (never predicted)."""
    order = len(counts)
    adjusted = [dict() for _ in range(order)]
    adjusted[-1] = dict(counts[-1])
    for n in range(order - 1, 0, -1):  # order n (1-based) from the left extensions at order n + 1
        continuation = Counter(gram[1:] for gram in counts[n])
        adjusted[n - 1] = {
            gram: (raw if gram[0] == SENTENCE_START else continuation[gram])
            for gram, raw in counts[n - 1].items()
            if gram != (SENTENCE_START,)
        }
    if order == 1:
        adjusted[0].pop((SENTENCE_START,), None)
    return adjusted


@dataclass(frozen=True)
class Discount:
    """D1, D2, D3+ of one order and where they came from."""

    d: tuple[float, float, float]
    counts_of_counts: tuple[int, int, int, int]  # t1..t4
    fallback: bool

    def of(self, count: int) -> float:
        return self.d[min(count, 3) - 1]


def discount(adjusted: dict) -> Discount:
    """Modified Kneser-Ney discounts of one order from its counts of counts (module docstring)."""
    t = Counter(count for count in adjusted.values() if count <= 4)  # tk: how many n-grams have count k
    t1, t2, t3, t4 = (t[k] for k in (1, 2, 3, 4))
    if min(t1, t2, t3, t4) > 0:
        y = t1 / (t1 + 2 * t2)
        d = (1 - 2 * y * t2 / t1, 2 - 3 * y * t3 / t2, 3 - 4 * y * t4 / t3)
        if all(0 < dk < k for k, dk in enumerate(d, 1)):
            return Discount(d, (t1, t2, t3, t4), fallback=False)
    return Discount(FALLBACK_DISCOUNTS, (t1, t2, t3, t4), fallback=True)


@dataclass
class NgramModel:
    """log10 probabilities and backoff weights per order: probabilities[n - 1][gram], backoffs[n - 1][gram]
    (only for grams that are the context of a longer one)."""

    probabilities: list[dict]
    backoffs: list[dict]
    discounts: list[Discount]

    @property
    def order(self) -> int:
        return len(self.probabilities)


def build(sentences: Iterable[list[str]], order: int) -> NgramModel:
    """The interpolated modified Kneser-Ney model of the sentences (module docstring)."""
    if not 1 <= order <= MAX_ORDER:
        raise ValueError(f"order {order}: must be 1 to {MAX_ORDER}")
    counts = count_ngrams(sentences, order)
    if not counts[0]:
        raise ValueError("no words: the text is empty")
    adjusted = adjusted_counts(counts)
    discounts = [discount(a) for a in adjusted]
    probabilities: list[dict] = [dict() for _ in range(order)]
    gammas: list[dict] = [dict() for _ in range(order)]  # gamma(h) of contexts h of order n - 1

    # Unigrams: interpolated with the uniform distribution over every predicted token.
    vocabulary = {gram[0] for gram in adjusted[0]} | {SENTENCE_END, UNKNOWN}
    total = sum(adjusted[0].values())
    leftover = sum(discounts[0].of(c) for c in adjusted[0].values()) / total
    uniform = leftover / len(vocabulary)
    unigram = {(w,): uniform for w in vocabulary}
    for gram, count in adjusted[0].items():
        unigram[gram] += (count - discounts[0].of(count)) / total
    probabilities[0] = unigram

    for n in range(2, order + 1):
        by_context: dict[tuple, list[tuple[str, int]]] = defaultdict(list)
        for gram, count in adjusted[n - 1].items():
            by_context[gram[:-1]].append((gram[-1], count))
        lower = probabilities[n - 2]
        for context, followers in by_context.items():
            total = sum(count for _, count in followers)
            gamma = sum(discounts[n - 1].of(count) for _, count in followers) / total
            gammas[n - 1][context] = gamma
            shorter = context[1:]
            for word, count in followers:
                # (shorter, word) is a suffix of a seen n-gram, so it was seen at order n - 1 too.
                lower_p = lower[(*shorter, word)]
                probabilities[n - 1][(*context, word)] = (count - discounts[n - 1].of(count)) / total + gamma * lower_p
    log_probabilities = [{gram: math.log10(p) for gram, p in level.items()} for level in probabilities]
    log_probabilities[0][(SENTENCE_START,)] = NEVER
    backoffs = [dict() for _ in range(order)]
    for n in range(2, order + 1):
        backoffs[n - 2] = {context: math.log10(g) for context, g in gammas[n - 1].items() if g > 0}
    return NgramModel(log_probabilities, backoffs, discounts)


# ---------------------------------------------------------------- ARPA


def arpa_lines(model: NgramModel) -> Iterator[str]:
    """The model in the ARPA format: sorted n-grams, 7 significant digits."""
    yield ""
    yield "\\data\\"
    for n, level in enumerate(model.probabilities, 1):
        yield f"ngram {n}={len(level)}"
    for n, level in enumerate(model.probabilities, 1):
        yield ""
        yield f"\\{n}-grams:"
        backoffs = model.backoffs[n - 1]
        for gram in sorted(level):
            line = f"{level[gram]:.7g}\t{' '.join(gram)}"
            if gram in backoffs:
                line += f"\t{backoffs[gram]:.7g}"
            elif n < model.order:
                line += "\t0"
            yield line
    yield ""
    yield "\\end\\"


def write_arpa(model: NgramModel, path: Path) -> None:
    """Write the ARPA file all or nothing."""
    with replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for line in arpa_lines(model):
            f.write(line + "\n")


def open_text(path: Path):
    """A text file, gzip-compressed or not (the official LMs are .arpa.gz)."""
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rt", encoding="utf-8") if magic == b"\x1f\x8b" else open(path, encoding="utf-8")


def read_vocabulary(path: Path) -> list[str]:
    """The words of an ARPA file's unigrams (plain or gzip), <s>, </s> and <unk> left out, in file order.
    LMError naming the file when it is not ARPA."""
    words, in_unigrams, seen_data = [], False, False
    try:
        with open_text(path) as f:
            for line in f:
                line = line.strip()
                if not seen_data:
                    if not line:
                        continue
                    if line != "\\data\\":
                        raise LMError(f"{path}: not an ARPA file (its first line is {line[:40]!r}, not \\data\\)")
                    seen_data = True
                elif line == "\\1-grams:":
                    in_unigrams = True
                elif in_unigrams:
                    if not line:
                        continue
                    if line.startswith("\\"):
                        break
                    fields = line.split()
                    if len(fields) < 2:
                        raise LMError(f"{path}: malformed unigram line {line[:60]!r}")
                    if fields[1] not in RESERVED:
                        words.append(fields[1])
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise LMError(f"cannot read {path}: {err}") from None
    except UnicodeDecodeError as err:
        raise LMError(f"{path}: not UTF-8 text ({err})") from None
    if not seen_data:
        raise LMError(f"{path}: empty, not an ARPA file")
    return words


# ---------------------------------------------------------------- the command line


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m pytorch.lm",
        description="Build a word n-gram language model (interpolated modified Kneser-Ney, as KenLM's lmplz) "
        "as an ARPA file, from text files (one sentence per line) or a prepared split's transcripts.",
        epilog="Use it with: python -m pytorch.evaluate --decoder beam --lm LM.arpa ... Words are upper-cased. "
        "Held-out splits (val, test, dev-*, test-*) are refused: an LM must never contain the transcripts it "
        "is evaluated on. Exit status: 0 written, 1 unreadable text or unwritable output, 2 bad usage.",
    )
    parser.add_argument("text", nargs="*", type=Path, metavar="TEXT_FILE", help="UTF-8 text, one sentence per line")
    parser.add_argument("--order", type=int, default=3, help=f"n-gram order, 1 to {MAX_ORDER} (default 3)")
    parser.add_argument("--out", type=Path, required=True, metavar="LM.arpa", help="the ARPA file to write")
    parser.add_argument("--data-dir", type=Path, help="a prepared dataset whose --split transcripts to use")
    parser.add_argument("--split", help="a training split or subset of --data-dir (train, train-clean-100, ...)")
    args = parser.parse_args(argv)
    if not 1 <= args.order <= MAX_ORDER:
        parser.error(f"--order {args.order}: must be 1 to {MAX_ORDER}")
    if (args.split is None) != (args.data_dir is None):
        parser.error("--data-dir and --split go together")
    if not args.text and args.split is None:
        parser.error("give TEXT_FILE(s) or --data-dir DIR --split NAME")
    return args


def run(args) -> None:
    def sentences():
        for path in args.text:
            yield from sentences_of_file(path)
        if args.split is not None:
            yield from sentences_of_split(args.data_dir, args.split)

    try:
        model = build(sentences(), args.order)
    except ValueError as err:
        raise LMError(f"{', '.join(map(str, args.text)) or args.split}: {err}") from None
    for n, d in enumerate(model.discounts, 1):
        if d.fallback:
            t1, t2, t3, t4 = d.counts_of_counts
            print(
                f"note: order {n}: counts of counts t1..t4 = {t1}, {t2}, {t3}, {t4} give no valid modified "
                f"Kneser-Ney discounts (too little text); using {', '.join(map(str, FALLBACK_DISCOUNTS))}",
                file=sys.stderr,
            )
    try:
        write_arpa(model, args.out)
    except OSError as err:
        raise LMError(f"cannot write {exit_status.describe_os_error(err, args.out)}") from None
    sizes = ", ".join(f"{len(level):,} {n}-grams" for n, level in enumerate(model.probabilities, 1))
    print(f"{args.out}: order {model.order}, {sizes}")


def main(argv=None) -> int:
    args = parse_args(argv)
    return exit_status.run(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
