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
import os
import sys
from dataclasses import dataclass, field
from multiprocessing.pool import ThreadPool
from pathlib import Path

import numpy as np

from data import dataset_dir
from data.dataset_dir import DatasetDir, DatasetError, RowError, parse_row, row_key
from data.files import sha256_file
from data.librispeech import SPLITS, SUBSETS, read_transcripts, transcript_file
from data.progress import progress_bar


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    digest: str = ""

    @property
    def passed(self) -> bool:
        return not self.problems


def read_records(dataset: DatasetDir, report: Report) -> dict[str, dict[str, str]]:
    """{subset: {relative path: sha256}} from checksums/<subset>.sha256."""
    records = {}
    for path in sorted((dataset.root / "checksums").glob("*.sha256")):
        subset, listed = path.stem, {}
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            entry = dataset_dir.parse_checksum_line(line)
            if entry is None:
                report.problems.append(f"malformed: checksums/{path.name}:{number}: {line!r}")
                continue
            listed[entry[0]] = entry[1]
        records[subset] = listed
    return records


def hash_all(data_dir: Path, paths: list[str], jobs: int) -> dict[str, str | None]:
    """{path: sha256 or None if missing}, hashed by `jobs` threads (hashlib releases the GIL)."""

    def one(path):
        try:
            return path, sha256_file(data_dir / path)
        except (FileNotFoundError, IsADirectoryError):
            return path, None

    with ThreadPool(max(1, jobs)) as pool:
        results = pool.imap_unordered(one, paths, chunksize=16)
        return dict(progress_bar(results, total=len(paths), unit="file", desc="sha256"))


def walk_files(base: Path, data_dir: Path) -> list[str]:
    """Every file under base, relative to data_dir, sorted."""
    found = []
    for root, _, files in os.walk(base):
        found += [(Path(root) / name).relative_to(data_dir).as_posix() for name in files]
    return sorted(found)


def subset_transcripts(dataset: DatasetDir, subset: str, report: Report) -> dict[str, tuple[str, str]]:
    """{utterance id: (normalised transcript, trans.txt path)} over the subset's trans.txt files."""
    transcripts = {}
    for path in sorted(dataset.audio(subset).glob("*/*/*.trans.txt")):
        rel = path.relative_to(dataset.root).as_posix()
        if path.name != transcript_file(path.parent):
            continue  # not the chapter's transcript: reported as an extra file
        chapter, problems = read_transcripts(path.read_bytes(), f"{path.parent.parent.name}-{path.parent.name}-", rel)
        report.problems += [f"bad transcript: {problem}" for problem in problems]
        for uid, text in chapter.items():
            if uid in transcripts:
                report.problems.append(f"duplicate: utterance {uid} in {rel}")
            transcripts[uid] = (text, rel)
    return transcripts


def read_manifest(path: Path, rel: str, report: Report) -> list[dict]:
    """The manifest's well-formed rows; each malformed one is a problem naming file and line."""
    rows = []
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        report.problems.append(f"missing: {rel}")
        return rows
    for number, line in enumerate(lines, 1):
        try:
            rows.append(parse_row(line))
        except RowError as err:
            report.problems.append(f"malformed: {rel}:{number}: {err}")
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
        key = row_key(row)
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
        elif row["offset"] + row["frames"] > frames:
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


def check_official(dataset: DatasetDir, subset: str, utterances: int, report: Report) -> None:
    """Official utterance count when the download record holds the official archive md5."""
    official = SUBSETS.get(subset)
    if official is None:
        report.notes.append(f"{subset}: not an official LibriSpeech subset; no official values to check")
        return
    marker = dataset.marker_text("download", subset)
    if marker is None:
        report.notes.append(f"{subset}.tar.gz: no download record; official utterance count not checked")
        return
    fields = marker.split()
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


def check_splits(dataset: DatasetDir, report: Report) -> None:
    """Each split manifest must equal the (duration, id) merge of its prepared subsets' manifests."""
    for split in SPLITS:
        sources = dataset_dir.split_sources(dataset, split)
        if not sources:
            continue
        rel = dataset_dir.manifest_of(split)
        try:
            digest = hashlib.sha256()
            for line in dataset_dir.merged_lines([dataset.manifest(s) for s in sources]):
                digest.update(line.encode("utf-8"))
        except DatasetError:
            continue  # a subset manifest that is missing or malformed is reported as such
        try:
            actual = sha256_file(dataset.path(rel))
        except FileNotFoundError:
            report.problems.append(f"missing: {rel}")
            continue
        if actual != digest.hexdigest():
            report.problems.append(f"changed: {rel} (not the merge of {', '.join(sources)})")


def feature_width(dataset: DatasetDir, report: Report) -> int | None:
    try:
        return int(dataset.read_feature_config()["n_features"])
    except (DatasetError, KeyError, ValueError, TypeError) as err:
        report.problems.append(f"missing: {dataset_dir.FEATURE_CONFIG} readable with n_features ({err})")
        return None


def verify(data_dir, jobs: int = 1) -> Report:
    """Check the prepared dataset under data_dir; problems name the file or utterance."""
    dataset, report = DatasetDir(data_dir), Report()
    records = read_records(dataset, report)
    for subset in dataset.marked("extract"):
        if subset not in records:
            report.problems.append(f"missing: checksums/{subset}.sha256 (subset {subset} extracted but not prepared)")
    if not records:
        report.problems.append(f"missing: {dataset.root}/checksums/*.sha256 (nothing prepared)")
        return report
    listed = {path: digest for subset in records.values() for path, digest in subset.items()}
    actual = hash_all(dataset.root, sorted(listed), jobs)
    for path in sorted(listed):
        if actual[path] is None:
            report.problems.append(f"missing: {path}")
        elif actual[path] != listed[path]:
            report.problems.append(f"changed: {path}")
    shards = Shards(dataset.root, feature_width(dataset, report))
    for subset in sorted(records):
        audio_files = walk_files(dataset.audio(subset), dataset.root)
        for path in audio_files + walk_files(dataset.features(subset), dataset.root):
            if path not in listed:
                report.problems.append(f"extra: {path}")
        transcripts = subset_transcripts(dataset, subset, report)
        check_audio_files(audio_files, transcripts, report)
        rel = dataset_dir.manifest_of(subset)
        check_rows(read_manifest(dataset.path(rel), rel, report), transcripts, shards, rel, report)
        check_official(dataset, subset, len(transcripts), report)
    check_splits(dataset, report)
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
