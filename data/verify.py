"""Portable dataset check: the same data gives the same verdict on any machine.

Nothing here depends on file order, mtimes, owners or the file system: every check compares
content (sha256) or parsed values. What is checked:
  - every file listed in checksums/<subset>.sha256 (written by data.prepare) still has its sha256;
  - no unlisted file under LibriSpeech/<subset>/ or features/<subset>/;
  - manifests/<subset>.jsonl against the trans.txt files: every utterance once, same transcript,
    its audio present, features[offset:offset+frames] inside a float16 shard of n_features columns,
    rows in (duration, id) order; the split manifests are the merge of their subsets' manifests;
  - where a value is known without the data: a subset downloaded from the official archive
    (.state/download-<subset>.done holds the official md5) has the official utterance count.

The printed dataset digest is sha256 over the sorted sha256sum lines of the audio and
transcripts only, i.e. `grep -h '  LibriSpeech/' checksums/*.sha256 | LC_ALL=C sort -k2 | sha256sum`
on a dataset that passes. Feature shards are computed in floating point and may differ by
machine (CPU vs GPU, library versions), so they are checked against this machine's record only
and are not part of the digest.
"""

import argparse
import hashlib
import heapq
import json
import os
import sys
from dataclasses import dataclass, field
from multiprocessing.pool import ThreadPool
from pathlib import Path

import numpy as np

from data.labels import UnknownCharacter, normalise
from data.librispeech import SPLITS, SUBSETS
from data.manifest import FIELDS
from data.progress import progress_bar


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    digest: str = ""

    @property
    def passed(self) -> bool:
        return not self.problems


def sha256_file(path: Path) -> str | None:
    """sha256 of the file's bytes, or None if it does not exist."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except (FileNotFoundError, IsADirectoryError):
        return None


def read_records(data_dir: Path, report: Report) -> dict[str, dict[str, str]]:
    """{subset: {relative path: sha256}} from checksums/<subset>.sha256."""
    records = {}
    for path in sorted((data_dir / "checksums").glob("*.sha256")):
        subset, listed = path.stem, {}
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            digest, sep, name = line.partition("  ")
            bad = len(digest) != 64 or not sep or name.startswith("/") or ".." in Path(name).parts
            if bad:
                report.problems.append(f"malformed: checksums/{path.name}:{number}: {line!r}")
                continue
            listed[name] = digest
        records[subset] = listed
    return records


def hash_all(data_dir: Path, paths: list[str], jobs: int) -> dict[str, str | None]:
    """{path: sha256 or None if missing}, hashed by `jobs` threads (hashlib releases the GIL)."""

    def one(path):
        return path, sha256_file(data_dir / path)

    with ThreadPool(max(1, jobs)) as pool:
        results = pool.imap_unordered(one, paths, chunksize=16)
        return dict(progress_bar(results, total=len(paths), unit="file", desc="sha256"))


def walk_files(base: Path, data_dir: Path) -> list[str]:
    """Every file under base, relative to data_dir, sorted."""
    found = []
    for root, _, files in os.walk(base):
        found += [(Path(root) / name).relative_to(data_dir).as_posix() for name in files]
    return sorted(found)


def read_transcripts(data_dir: Path, subset: str, report: Report) -> dict[str, tuple[str, str]]:
    """{utterance id: (normalised transcript, trans.txt path)} over the subset's trans.txt files."""
    transcripts = {}
    for path in sorted((data_dir / "LibriSpeech" / subset).glob("*/*/*.trans.txt")):
        rel = path.relative_to(data_dir).as_posix()
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            uid, _, words = line.strip().partition(" ")
            if uid:
                if uid in transcripts:
                    report.problems.append(f"duplicate: utterance {uid} in {rel}")
                try:
                    text = normalise(words)
                except UnknownCharacter as err:
                    report.problems.append(f"bad transcript: utterance {uid} ({rel}:{number}): {err}")
                    text = " ".join(words.split())
                transcripts[uid] = (text, rel)
    return transcripts


def row_problem(line: bytes) -> tuple[dict | None, str | None]:
    """(row, None) for a well-formed manifest line, else (None, what is wrong with it)."""
    try:
        row = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as err:
        return None, f"not UTF-8 (byte {line[err.start]:#04x} at column {err.start + 1})"
    except json.JSONDecodeError as err:
        return None, f"not JSON ({err.msg} at column {err.colno})"
    if not isinstance(row, dict):
        return None, f"a JSON {type(row).__name__}, not an object"
    missing = [key for key in FIELDS if key not in row]
    if missing:
        return None, f"no {', '.join(repr(key) for key in missing)}"
    for key, kinds in FIELDS.items():
        if not isinstance(row[key], kinds) or isinstance(row[key], bool):
            return (
                None,
                f"{key!r} is {type(row[key]).__name__} {str(row[key])[:40]!r}, "
                f"not {' or '.join(t.__name__ for t in kinds)}",
            )
    return row, None


def read_manifest(path: Path, rel: str, report: Report) -> list[dict]:
    rows = []
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        report.problems.append(f"missing: {rel}")
        return rows
    for number, line in enumerate(lines, 1):
        row, problem = row_problem(line)
        if problem:
            report.problems.append(f"malformed: {rel}:{number}: {problem}")
            continue
        rows.append(row)
    return rows


class Shards:
    """Shapes of feature shards, each opened once (memory-mapped header only)."""

    def __init__(self, data_dir: Path, n_features: int | None):
        self.data_dir, self.n_features, self.shapes = data_dir, n_features, {}

    def rows(self, rel: str) -> int | None:
        """Frames in the shard if it is a float16 (frames, n_features) array, else None."""
        if rel not in self.shapes:
            try:
                array = np.load(self.data_dir / rel, mmap_mode="r")
                ok = array.dtype == np.float16 and array.ndim == 2 and array.shape[1] == self.n_features
                self.shapes[rel] = array.shape[0] if ok else None
            except (OSError, ValueError):
                self.shapes[rel] = None
        return self.shapes[rel]


def check_rows(rows: list[dict], transcripts: dict, shards: Shards, rel: str, report: Report) -> None:
    """Manifest rows vs the trans.txt lines: each utterance once, same transcript, frames in range, sorted."""
    seen, previous = set(), None
    for number, row in enumerate(rows, 1):
        uid = row["id"]
        if uid in seen:
            report.problems.append(f"duplicate: utterance {uid} in {rel}")
        seen.add(uid)
        key = (row["duration"], uid)
        if previous is not None and key < previous:
            report.problems.append(f"unsorted: {rel}:{number} (utterance {uid})")
        previous = key
        if uid not in transcripts:
            report.problems.append(f"extra: utterance {uid} in {rel} has no transcript line")
            continue
        text, trans = transcripts[uid]
        if row["transcript"] != text:
            report.problems.append(
                f"transcript differs: utterance {uid}: {rel} {row['transcript']!r}, {trans} {text!r}"
            )
        if not (shards.data_dir / row["audio"]).is_file():
            report.problems.append(f"missing: {row['audio']} (utterance {uid})")
        frames = shards.rows(row["features"])
        if frames is None:
            report.problems.append(
                f"bad shard: {row['features']} (utterance {uid}): missing, not float16 or not {shards.n_features} wide"
            )
        elif not (row["offset"] >= 0 and row["frames"] > 0 and row["offset"] + row["frames"] <= frames):
            report.problems.append(
                f"features out of range: utterance {uid}: "
                f"{row['features']}[{row['offset']}:+{row['frames']}] of {frames}"
            )
    for uid in sorted(set(transcripts) - seen):
        report.problems.append(f"missing: utterance {uid} ({transcripts[uid][1]}) from {rel}")


def check_audio_files(files: list[str], transcripts: dict, report: Report) -> None:
    """Every FLAC has a transcript line and every transcript line a FLAC."""
    flacs = {Path(f).stem: f for f in files if f.endswith(".flac")}
    for uid, path in sorted(flacs.items()):
        if uid not in transcripts:
            report.problems.append(f"extra: {path} has no transcript line")
    for uid in sorted(set(transcripts) - set(flacs)):
        report.problems.append(f"missing: FLAC of utterance {uid} ({transcripts[uid][1]})")


def check_official(data_dir: Path, subset: str, utterances: int, report: Report) -> None:
    """Official utterance count when the download record holds the official archive md5."""
    marker = data_dir / ".state" / f"download-{subset}.done"
    official = SUBSETS.get(subset)
    if official is None:
        report.notes.append(f"{subset}: not an official LibriSpeech subset; no official values to check")
        return
    if not marker.exists():
        report.notes.append(f"{subset}.tar.gz: no download record; official utterance count not checked")
        return
    fields = marker.read_text(encoding="utf-8", errors="replace").split()
    recorded = fields[0] if fields else ""
    if recorded != official.md5:
        report.notes.append(
            f"{subset}.tar.gz: recorded md5 {recorded or '(none)'} is not the official {official.md5}; "
            "a non-official archive, official utterance count not checked"
        )
        return
    report.notes.append(f"{subset}.tar.gz: recorded md5 {recorded} = official")
    if utterances != official.utterances:
        report.problems.append(
            f"count: {subset} has {utterances} utterances, the official archive {official.utterances}"
        )


def _keyed_lines(path: Path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            yield (row["duration"], row["id"]), line


def check_splits(data_dir: Path, subsets: list[str], report: Report) -> None:
    """Each split manifest must equal the (duration, id) merge of its prepared subsets' manifests."""
    for split, members in SPLITS.items():
        prepared = [s for s in members if s in subsets and (data_dir / "manifests" / f"{s}.jsonl").is_file()]
        rel = f"manifests/{split}.jsonl"
        if not prepared:
            continue
        try:
            digest = hashlib.sha256()
            streams = [_keyed_lines(data_dir / "manifests" / f"{s}.jsonl") for s in prepared]
            for _, line in heapq.merge(*streams, key=lambda item: item[0]):
                digest.update(line.encode("utf-8"))
        except (ValueError, KeyError, TypeError):  # ValueError: also bad UTF-8 or JSON
            continue  # already reported as a malformed subset manifest
        actual = sha256_file(data_dir / rel)
        if actual is None:
            report.problems.append(f"missing: {rel}")
        elif actual != digest.hexdigest():
            report.problems.append(f"changed: {rel} (not the merge of {', '.join(prepared)})")


def feature_width(data_dir: Path, report: Report) -> int | None:
    path = data_dir / "features" / "features.json"
    try:
        return int(json.loads(path.read_text())["n_features"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        report.problems.append(f"missing: features/features.json readable with n_features ({err.__class__.__name__})")
        return None


def verify(data_dir, jobs: int = 1) -> Report:
    """Check the prepared dataset under data_dir; problems name the file or utterance."""
    data_dir, report = Path(data_dir), Report()
    records = read_records(data_dir, report)
    extracted = sorted(p.name[len("extract-") : -len(".done")] for p in (data_dir / ".state").glob("extract-*.done"))
    for subset in extracted:
        if subset not in records:
            report.problems.append(f"missing: checksums/{subset}.sha256 (subset {subset} extracted but not prepared)")
    if not records:
        report.problems.append(f"missing: {data_dir}/checksums/*.sha256 (nothing prepared)")
        return report
    listed = {path: digest for subset in records.values() for path, digest in subset.items()}
    actual = hash_all(data_dir, sorted(listed), jobs)
    for path in sorted(listed):
        if actual[path] is None:
            report.problems.append(f"missing: {path}")
        elif actual[path] != listed[path]:
            report.problems.append(f"changed: {path}")
    shards = Shards(data_dir, feature_width(data_dir, report))
    for subset in sorted(records):
        audio_files = walk_files(data_dir / "LibriSpeech" / subset, data_dir)
        for path in audio_files + walk_files(data_dir / "features" / subset, data_dir):
            if path not in listed:
                report.problems.append(f"extra: {path}")
        transcripts = read_transcripts(data_dir, subset, report)
        check_audio_files(audio_files, transcripts, report)
        rel = f"manifests/{subset}.jsonl"
        check_rows(read_manifest(data_dir / rel, rel, report), transcripts, shards, rel, report)
        check_official(data_dir, subset, len(transcripts), report)
    check_splits(data_dir, sorted(records), report)
    lines = "".join(f"{actual[p]}  {p}\n" for p in sorted(listed) if p.startswith("LibriSpeech/") and actual[p])
    report.digest = hashlib.sha256(lines.encode()).hexdigest()
    report.problems = list(dict.fromkeys(report.problems))  # one line per problem, first-seen order
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data.verify",
        description="Check a prepared dataset against its recorded checksums, transcripts and official facts.",
        epilog="Exit status 0: 'Dataset Checksum Passed.'; 1: 'Dataset Checksum Failed.' after the problems.",
    )
    parser.add_argument("--data-dir", default="LibriSpeech_dataset", help="dataset directory (default %(default)s)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="hashing threads (default %(default)s)")
    args = parser.parse_args(argv)
    if not Path(args.data_dir).is_dir():
        print(f"error: --data-dir {args.data_dir}: no such directory", file=sys.stderr)
        print("Dataset Checksum Failed.")
        return 1
    report = verify(args.data_dir, args.jobs)
    for note in report.notes:
        print(f"note: {note}")
    for problem in report.problems:
        print(problem)
    print(f"Dataset digest (sha256 of the sorted audio + transcript sha256sum lines): {report.digest}")
    print("Dataset Checksum Passed." if report.passed else "Dataset Checksum Failed.")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
