"""The corpus WER of an MLPerf LoadGen accuracy log: each sample's transcript (bench.loadgen answers
with it in UTF-8) against the split's reference, counted by pytorch.decode.ErrorCounts, the counts
pytorch.evaluate and training use, so the WER is theirs for the same transcripts.

    python -m bench.loadgen_accuracy --log-dir results/loadgen/Offline-accuracy-... --data-dir D --split test
    python -m bench.loadgen_accuracy --accuracy-log mlperf_log_accuracy.json --data-dir D --split test

mlperf_log_accuracy.json is a list of {"seq_id", "qsl_idx", "data": hex bytes}; qsl_idx is the row of the
split's manifest. Every row must appear exactly once (an accuracy-mode log). The last line printed is
`WER <value>` (percent, two decimals, as pytorch.evaluate's "WER (corpus)").
Exit status (exit_status.py): 0 done, 1 a missing, truncated or incomplete log, or missing data, 2 bad usage.
"""

import argparse
import binascii
import json
import sys
from pathlib import Path

import exit_status
from data import dataset_dir
from pytorch import loader
from pytorch.decode import ErrorCounts

ACCURACY_LOG = "mlperf_log_accuracy.json"


class AccuracyLogError(exit_status.Failure):
    """An accuracy log that cannot be read or does not hold every sample once; the message names it."""


def read_entries(path: Path) -> list[dict]:
    """The log's entries; AccuracyLogError naming the file if it is missing or not a JSON list."""
    try:
        entries = json.loads(path.read_text())
    except OSError as err:
        raise AccuracyLogError(f"cannot read the accuracy log: {exit_status.describe_os_error(err, path)}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AccuracyLogError(f"{path}: not JSON ({err}); a test that did not finish leaves it truncated") from None
    if not isinstance(entries, list):
        raise AccuracyLogError(f"{path}: not a list of LoadGen entries")
    return entries


def _transcript(entry, path: Path, n: int) -> tuple[int, str]:
    """(qsl_idx, transcript) of one entry; AccuracyLogError naming the file and the entry."""
    try:
        index, data = entry["qsl_idx"], entry["data"]
        if not isinstance(index, int) or not 0 <= index < n:
            raise ValueError(f"qsl_idx {index!r} is not a sample of a split of {n}")
        return index, binascii.unhexlify(data).decode("utf-8")
    except (KeyError, TypeError, ValueError) as err:  # UnicodeDecodeError and binascii.Error are ValueErrors
        raise AccuracyLogError(f"{path}: entry {entry!r}: {err}") from None


def transcripts(path: Path, n: int) -> list[str]:
    """The n samples' transcripts from the log at path, by qsl_idx; AccuracyLogError naming the file if a
    sample is missing, duplicated or garbled (a performance-mode log, or another split's)."""
    found: dict[int, str] = {}
    for entry in read_entries(path):
        index, text = _transcript(entry, path, n)
        if index in found:
            raise AccuracyLogError(f"{path}: sample {index} appears more than once; is it an accuracy-mode log?")
        found[index] = text
    missing = [i for i in range(n) if i not in found]
    if missing:
        raise AccuracyLogError(
            f"{path}: {len(missing)} of the split's {n} samples are missing (first: {missing[0]}); "
            "is it an accuracy-mode log of this split?"
        )
    return [found[i] for i in range(n)]


def counts_of(hypotheses: list[str], split: loader.Split) -> ErrorCounts:
    """The error counts of hypothesis i against manifest row i's transcript."""
    counts = ErrorCounts()
    for i, hypothesis in enumerate(hypotheses):
        counts.add(split.manifest.transcript(i), hypothesis)
    return counts


def report(path: Path, split: loader.Split) -> str:
    """The lines printed for the log at path: the corpus WER with its counts, and last `WER <value>`."""
    counts = counts_of(transcripts(path, len(split)), split)
    return "\n".join(
        [
            f"accuracy log: {path} ({counts.utterances} samples of {split.name})",
            f"WER (corpus): {counts.wer:.2f}%  ({counts.word_edits} edits / {counts.words} words)",
            f"CER: {counts.cer:.2f}%",
            f"WER {counts.wer:.2f}",
        ]
    )


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadgen_accuracy",
        description="The corpus WER of an MLPerf LoadGen accuracy log written by python -m bench.loadgen.",
        epilog="The last line is `WER <value>` (percent). Exit status: 0 done, 1 missing, truncated or incomplete "
        "log or missing data, 2 bad usage.",
    )
    log = parser.add_mutually_exclusive_group(required=True)
    log.add_argument("--log-dir", type=Path, help=f"a LoadGen output directory holding {ACCURACY_LOG}")
    log.add_argument("--accuracy-log", type=Path, metavar="FILE", help=f"the {ACCURACY_LOG} itself")
    dataset_dir.add_data_dir_argument(parser)
    parser.add_argument("--split", default="val", help="the split the log is of (default: val)")
    return parser.parse_args(argv)


def run(args) -> None:
    path = args.accuracy_log or args.log_dir / ACCURACY_LOG
    print(report(path, loader.open_split(args.data_dir, args.split)))


def main(argv=None) -> int:
    args = parse_args(argv)
    return exit_status.run(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
