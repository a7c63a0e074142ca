"""Portable dataset check: the same data gives the same verdict on any machine.

Nothing here depends on file order, mtimes, owners or the file system: every check compares
content (sha256) or parsed values. What is checked:
  - every file listed in checksums/<subset>.sha256 (written by data.prepare: audio, transcripts,
    feature shards, the subset's manifest and features/features.json) still has its sha256;
  - no unlisted file under LibriSpeech/<subset>/ or features/<subset>/, and nothing in manifests/,
    checksums/ or the features/ root that preparation did not write;
  - manifests/<subset>.jsonl against the trans.txt files: every utterance once, same transcript,
    its audio present, features[offset:offset+frames] inside a float16 shard of n_features columns,
    rows in (duration, id) order; the split manifests are the merge of their subsets' manifests;
  - where a value is known without the data: a subset downloaded from the official archive
    (.state/download-<subset>.done holds the official md5) has the official utterance count;
  - the language-model files of download_dataset.sh --lm: every lm/<file> still has the md5 its
    record (.state/lm-<file>.done) holds, no record lacks its file and no file its record; a note says
    whether that md5 is the official one.

The printed dataset digest is sha256 over the sorted sha256sum lines of the audio and
transcripts only, i.e. `grep -h '  LibriSpeech/' checksums/*.sha256 | LC_ALL=C sort -k2 | sha256sum`
on a dataset that passes. Feature shards are computed in floating point and may differ by
machine (CPU vs GPU, library versions), so they are checked against this machine's record only
and are not part of the digest.

A file or directory that cannot be read is a problem (`unreadable: <path>: permission denied`), never
a traceback. Files are hashed by --jobs processes: per-file Python work holds the GIL, so threads do
not scale on LibriSpeech's small files. They start before anything else (numpy is imported after
they have forked, for the manifests), and everything but the hashes is checked while they hash.
verify holds the dataset directory's lock shared: verifies run side by side, never beside a
download or preparation.

Exit status (exit_status.py): 0 and `Dataset Checksum Passed.`; 1 and `Dataset Checksum Failed.` after
the problems (or an error: no such directory, in use by a download); 2 bad usage.
"""

import argparse
import contextlib
import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import exit_status
from data import dataset_dir, workers
from data.dataset_dir import CHECKSUMS, FEATURE_CONFIG, FEATURES, MANIFESTS, DatasetDir, DatasetError, command_line
from data.files import file_digest, sha256_file
from data.librispeech import LM_FILES, SPLITS, SUBSETS, read_transcripts, transcript_file


class DatasetCheckFailed(exit_status.Failure):
    """The dataset is not as it was prepared; the problems are listed before the verdict."""


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    digest: str = ""

    @property
    def passed(self) -> bool:
        return not self.problems


def why(err: OSError) -> str:
    """What went wrong, in the plain words of exit_status ("permission denied"), without the path."""
    return exit_status.describe_os_error(OSError(err.errno, err.strerror))


def read_bytes(dataset: DatasetDir, rel: str, report: Report) -> bytes | None:
    """The file's bytes; None (and a problem naming it) if it is missing or unreadable."""
    try:
        return dataset.path(rel).read_bytes()
    except FileNotFoundError:
        report.problems.append(f"missing: {rel}")
    except OSError as err:
        report.problems.append(f"unreadable: {rel}: {why(err)}")
    return None


def read_records(dataset: DatasetDir, report: Report) -> dict[str, dict[str, str]]:
    """{subset: {relative path: sha256}} from checksums/<subset>.sha256."""
    records = {}
    for subset in dataset.recorded_subsets():
        listed = {}
        data = read_bytes(dataset, dataset_dir.checksums_of(subset), report)
        if data is None:
            continue
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            entry = dataset_dir.parse_checksum_line(line)
            if entry is None:
                report.problems.append(f"malformed: {dataset_dir.checksums_of(subset)}:{number}: {line!r}")
                continue
            listed[entry[0]] = entry[1]
        records[subset] = listed
    return records


def hash_one(data_dir: str, rel: str) -> tuple[str | None, str | None]:
    """(sha256, None) of data_dir/rel, or (None, "missing" or why it cannot be read)."""
    try:
        return sha256_file(Path(data_dir) / rel), None
    except FileNotFoundError:
        return None, "missing"
    except OSError as err:
        return None, why(err)


def md5_one(path: str) -> tuple[str | None, str | None]:
    """(md5, None) of a file, or (None, "missing" or why it cannot be read): an LM file's check."""
    try:
        return file_digest(Path(path), "md5").hexdigest(), None
    except FileNotFoundError:
        return None, "missing"
    except OSError as err:
        return None, why(err)


def hash_batch(task: tuple[str, list[str]]) -> list[tuple[str | None, str | None]]:
    """(data dir, relative paths) -> hash_one of each path, in order: one task of a hashing process."""
    data_dir, paths = task
    return [hash_one(data_dir, rel) for rel in paths]


@contextlib.contextmanager
def hashing_pool(jobs: int):
    """The pool of `jobs` hashing processes (None for one: the caller hashes), started at once: its
    workers fork from this process as it is now, before the checks import numpy."""
    if jobs <= 1:
        yield None
        return
    with workers.pool(jobs) as pool:
        yield pool


# Tasks per hashing process: few enough that handing them out costs the parent next to nothing (a
# task per file cost it a third of a CPU-second on 12,705 files), enough that the last to finish
# leaves the others idle only briefly.
TASKS_PER_PROCESS = 32


def hashing(data_dir: Path, paths: list[str], pool, processes: int):
    """Start hashing `paths` in the pool of `processes` (or, without one, when asked) and return a
    function that waits for the result: {path: (sha256, None) or (None, "missing" or why it is
    unreadable)}. Meanwhile the caller runs the checks that need no hashes, so the cores that hash are
    never idle while it reads manifests.

    Processes, not threads: hashlib releases the GIL only while it hashes, and on small files the
    per-file Python work around it (open, stat, read calls) serialises threads on the GIL.
    """
    count = max(1, min(len(paths), TASKS_PER_PROCESS * processes))
    # Strided, not cut in runs: sorted paths keep the large feature shards together, and every
    # task gets its share of them.
    batches = [paths[k::count] for k in range(count)]
    tasks = [(str(data_dir), batch) for batch in batches]
    results = map(hash_batch, tasks) if pool is None else pool.imap(hash_batch, tasks)  # the workers start now
    return lambda: _collect(batches, results, len(paths))


def _collect(batches: list[list[str]], results, total: int) -> dict[str, tuple[str | None, str | None]]:
    from data.progress import progress_bar  # here: tqdm is imported while the workers hash

    hashes = {}
    with progress_bar(total=total, unit="file", desc="sha256") as bar:
        for batch, digests in zip(batches, results):
            hashes.update(zip(batch, digests))
            bar.update(len(batch))
    return hashes


def hash_all(data_dir: Path, paths: list[str], jobs: int) -> dict[str, tuple[str | None, str | None]]:
    """{path: (sha256, None) or (None, "missing" or why it is unreadable)}, hashed by `jobs` processes."""
    with hashing_pool(jobs) as pool:
        return hashing(data_dir, paths, pool, jobs)()


def walk_files(base: Path, data_dir: Path, report: Report) -> list[str]:
    """Every file under base, relative to data_dir, sorted; a directory it cannot read is a problem."""

    def unreadable(err: OSError) -> None:  # os.walk would skip the directory without a word
        if not isinstance(err, FileNotFoundError):  # a subset without features/: reported per file
            rel = Path(err.filename).relative_to(data_dir).as_posix() if err.filename else str(base)
            report.problems.append(f"unreadable: {rel}: {why(err)}")

    found, skip = [], len(str(data_dir)) + 1  # string work: a Path per file costs more than the walk
    for root, _, files in os.walk(base, onerror=unreadable):
        relative = root[skip:]
        found += [f"{relative}/{name}" for name in files]
    return sorted(found)


def subset_transcripts(dataset: DatasetDir, files: list[str], report: Report) -> dict[str, tuple[str, str]]:
    """{utterance id: (normalised transcript, trans.txt path)} over the trans.txt files among a
    subset's `files` (walk_files of LibriSpeech/<subset>)."""
    transcripts = {}
    # LibriSpeech/<subset>/<spk>/<chap>/<name>.trans.txt, in the order of their path parts
    chapters = sorted(
        parts for parts in (rel.split("/") for rel in files if rel.endswith(".trans.txt")) if len(parts) == 5
    )
    for parts in chapters:
        speaker, chapter, name, rel = *parts[2:], "/".join(parts)
        if name != transcript_file(f"{speaker}/{chapter}"):
            continue  # not the chapter's transcript: reported as an extra file
        data = read_bytes(dataset, rel, report)
        if data is None:
            continue
        found, problems = read_transcripts(data, f"{speaker}-{chapter}-", rel)
        report.problems += [f"bad transcript: {problem}" for problem in problems]
        for uid, text in found.items():
            if uid in transcripts:
                report.problems.append(f"duplicate: utterance {uid} in {rel}")
            transcripts[uid] = (text, rel)
    return transcripts


def read_manifest(dataset: DatasetDir, rel: str, report: Report):
    """The manifest's well-formed rows (data.manifest.Parsed); each malformed one is a problem naming
    file and line."""
    from data.manifest import parse_lines  # here: numpy is imported while the workers hash

    parsed = parse_lines(read_bytes(dataset, rel, report) or b"")
    report.problems += [f"malformed: {rel}:{line + 1}: {err}" for line, err in parsed.errors.items()]
    return parsed


class Shards:
    """Frames of each feature shard, from its .npy header (read once)."""

    def __init__(self, data_dir: Path, n_features: int | None):
        self.data_dir, self.n_features, self.shapes = data_dir, n_features, {}

    def rows(self, rel: str) -> int | None:
        """Frames in the shard if it is a whole float16 (frames, n_features) array, else None."""
        if rel not in self.shapes:
            self.shapes[rel] = self._frames(self.data_dir / rel)
        return self.shapes[rel]

    def _frames(self, path: Path) -> int | None:
        import numpy as np  # here: imported while the workers hash

        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, fortran, dtype = read_header(f)
                whole = os.fstat(f.fileno()).st_size == f.tell() + np.prod(shape, dtype=np.int64) * dtype.itemsize
        except (OSError, ValueError):
            return None
        ok = whole and not fortran and dtype == np.float16 and len(shape) == 2 and shape[1] == self.n_features
        return shape[0] if ok else None


def check_rows(parsed, transcripts: dict, audio: set[str], shards: Shards, rel: str, report: Report) -> None:
    """Manifest rows vs the trans.txt lines: each utterance once, same transcript, its audio there
    (`audio`: the files found, else a stat), frames in range, sorted."""
    values = parsed.columns.values
    columns = [values[key].tolist() for key in ("id", "transcript", "audio", "features")]
    numbers = [values[key].tolist() for key in ("duration", "frames", "offset")]
    seen, previous = set(), None
    for line, uid, text, flac, shard, duration, count, offset in zip(parsed.lines.tolist(), *columns, *numbers):
        if uid in seen:
            report.problems.append(f"duplicate: utterance {uid} in {rel}")
        seen.add(uid)
        key = duration, uid
        if previous is not None and key < previous:
            report.problems.append(f"unsorted: {rel}:{line + 1} (utterance {uid})")
        previous = key
        if uid not in transcripts:
            report.problems.append(f"extra: utterance {uid} in {rel} has no transcript line")
            continue
        expected, trans = transcripts[uid]
        if text != expected:
            report.problems.append(f"transcript differs: utterance {uid}: {rel} {text!r}, {trans} {expected!r}")
        if flac not in audio and not (shards.data_dir / flac).is_file():
            report.problems.append(f"missing: {flac} (utterance {uid})")
        frames = shards.rows(shard)
        if frames is None:
            report.problems.append(
                f"bad shard: {shard} (utterance {uid}): missing, not float16 or not {shards.n_features} wide"
            )
        elif offset + count > frames:
            report.problems.append(f"features out of range: utterance {uid}: {shard}[{offset}:+{count}] of {frames}")
    for uid in sorted(set(transcripts) - seen):
        report.problems.append(f"missing: utterance {uid} ({transcripts[uid][1]}) from {rel}")


def check_audio_files(files: list[str], transcripts: dict, report: Report) -> None:
    """Every FLAC has a transcript line and every transcript line a FLAC."""
    flacs = {f[f.rfind("/") + 1 : -len(".flac")]: f for f in files if f.endswith(".flac")}
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
    from data.manifest import merged_lines, split_sources  # here: numpy is imported while the workers hash

    for split in SPLITS:
        sources = split_sources(dataset, split)
        if not sources:
            continue
        rel = dataset_dir.manifest_of(split)
        try:
            digest = hashlib.sha256("".join(merged_lines([dataset.manifest(s) for s in sources])).encode("utf-8"))
        except (DatasetError, OSError):
            continue  # a subset manifest that is missing, unreadable or malformed is reported as such
        actual, error = hash_one(str(dataset.root), rel)
        if error is not None:
            report.problems.append(f"missing: {rel}" if error == "missing" else f"unreadable: {rel}: {error}")
            continue
        if actual != digest.hexdigest():
            report.problems.append(f"changed: {rel} (not the merge of {', '.join(sources)})")


def feature_width(dataset: DatasetDir, report: Report) -> int | None:
    try:
        return int(dataset.read_feature_config()["n_features"])
    except OSError as err:
        report.problems.append(f"unreadable: {FEATURE_CONFIG}: {why(err)}")
    except (DatasetError, KeyError, ValueError, TypeError) as err:
        report.problems.append(f"missing: {FEATURE_CONFIG} readable with n_features ({err})")
    return None


def expected_entries(dataset: DatasetDir, records: dict) -> dict[str, set[str]]:
    """{directory: names preparation writes there} for the directories verify owns whole."""
    from data.manifest import split_sources  # here: numpy is imported while the workers hash

    splits = [split for split in SPLITS if split_sources(dataset, split)]
    return {
        CHECKSUMS: {Path(dataset_dir.checksums_of(subset)).name for subset in records},
        MANIFESTS: {Path(dataset_dir.manifest_of(name)).name for name in [*records, *splits]},
        FEATURES: {Path(FEATURE_CONFIG).name, *records},
    }


def check_extra_entries(dataset: DatasetDir, records: dict, report: Report) -> None:
    """Anything in checksums/, manifests/ or the features/ root that preparation did not write
    (a stray copy, a temporary file of a killed run, the shards of an unrecorded subset)."""
    for directory, expected in expected_entries(dataset, records).items():
        try:
            with os.scandir(dataset.path(directory)) as entries:
                names = sorted((entry.name, entry.is_dir()) for entry in entries)
        except FileNotFoundError:
            continue  # checksums/ exists (records were read); features/ or manifests/ missing: reported per file
        except OSError as err:
            report.problems.append(f"unreadable: {directory}: {why(err)}")
            continue
        for name, is_dir in names:
            if name not in expected or (directory == FEATURES and is_dir != (name in records)):
                report.problems.append(f"extra: {directory}/{name}{'/' if is_dir else ''}")


def check_hashes(hashes: dict, listed: dict[str, str], report: Report) -> dict[str, str | None]:
    """A problem for each listed file missing, unreadable or changed (hashes: from `hashing`).
    {path: sha256 or None}."""
    actual = {}
    for path, (digest, error) in sorted(hashes.items()):
        actual[path] = digest
        if error == "missing":
            report.problems.append(f"missing: {path}")
        elif error is not None:
            report.problems.append(f"unreadable: {path}: {error}")
        elif digest != listed[path]:
            report.problems.append(f"changed: {path}")
    return actual


def lm_files_found(dataset: DatasetDir, report: Report) -> list[str]:
    """The names in lm/ that are files (a .part is an unfinished download: a note, not a file to check)."""
    try:
        entries = sorted(os.scandir(dataset.lm_dir), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    except OSError as err:
        report.problems.append(f"unreadable: {dataset_dir.LM}: {why(err)}")
        return []
    names = []
    for entry in entries:
        if entry.name.endswith(".part"):
            report.notes.append(
                f"{dataset_dir.LM}/{entry.name}: an unfinished download; download_dataset.sh --lm resumes it"
            )
        elif entry.is_dir():
            report.problems.append(f"extra: {dataset_dir.LM}/{entry.name}/")
        else:
            names.append(entry.name)
    return names


def check_lm_files(dataset: DatasetDir, names: list[str], digests: dict, report: Report) -> None:
    """Each LM file against its download record (digests: {name: (md5, None) or (None, why)})."""
    recorded = dataset.recorded_lm_files()
    for name in sorted(set(recorded) | set(names)):
        rel = f"{dataset_dir.LM}/{name}"
        record = []  # [the recorded md5]
        if name in recorded:
            record = dataset.lm_marker(name).read_text(encoding="utf-8", errors="replace").split()[:1]
        if name not in names:
            report.problems.append(f"missing: {rel} (downloaded: .state/lm-{name}.done records it)")
            continue
        if not record:
            report.problems.append(f"extra: {rel} (no download record; download_dataset.sh --lm fetches, records it)")
            continue
        digest, error = digests[name]
        if error is not None:
            report.problems.append(f"unreadable: {rel}: {error}")
        elif digest != record[0]:
            report.problems.append(f"changed: {rel} (md5 {digest}, recorded {record[0]})")
        official = LM_FILES[name].md5 if name in LM_FILES else None
        if official is None:
            report.notes.append(f"{rel}: no official md5 known; checked against its download record only")
        elif record[0] == official:
            report.notes.append(f"{rel}: recorded md5 {record[0]} = official")
        else:
            report.notes.append(f"{rel}: recorded md5 {record[0]} is not the official {official}")


def verify(data_dir, jobs: int = 1) -> Report:
    """Check the prepared dataset under data_dir; problems name the file or utterance."""
    dataset, report = DatasetDir(data_dir), Report()
    lm_names = lm_files_found(dataset, report)
    lm_paths = [str(dataset.lm_file(name)) for name in lm_names]
    with hashing_pool(jobs) as pool:
        lm_pending = pool.map_async(md5_one, lm_paths) if pool is not None else None  # hashed beside the rest
        records = read_records(dataset, report)
        for subset in dataset.marked("extract"):
            if subset not in records:
                report.problems.append(
                    f"missing: {dataset_dir.checksums_of(subset)} (subset {subset} extracted but not prepared)"
                )
        if records:
            listed = {path: digest for subset in records.values() for path, digest in subset.items()}
            hashes = hashing(dataset.root, sorted(listed), pool, jobs)
            others = check_contents(dataset, records, listed)  # while the workers hash
            actual = check_hashes(hashes(), listed, report)
        else:
            report.problems.append(f"missing: {dataset.root}/{CHECKSUMS}/*.sha256 (nothing prepared)")
        lm_digests = lm_pending.get() if lm_pending is not None else [md5_one(path) for path in lm_paths]
    if records:
        report.problems += others.problems  # the hashes' problems first, as a reader expects
        report.notes += others.notes
        audio = dataset_dir.AUDIO + "/"
        lines = "".join(f"{actual[p]}  {p}\n" for p in sorted(listed) if p.startswith(audio) and actual[p])
        report.digest = hashlib.sha256(lines.encode()).hexdigest()
    check_lm_files(dataset, lm_names, dict(zip(lm_names, lm_digests)), report)
    report.problems = list(dict.fromkeys(report.problems))  # one line per problem, first-seen order
    return report


def check_contents(dataset: DatasetDir, records: dict, listed: dict[str, str]) -> Report:
    """Everything but the hashes: extra files, transcripts against audio, manifest rows against
    transcripts and shards, official counts, split manifests."""
    report = Report()
    shards = Shards(dataset.root, feature_width(dataset, report))
    for subset in sorted(records):
        audio_files = walk_files(dataset.audio(subset), dataset.root, report)
        for path in audio_files + walk_files(dataset.features(subset), dataset.root, report):
            if path not in listed:
                report.problems.append(f"extra: {path}")
        transcripts = subset_transcripts(dataset, audio_files, report)
        check_audio_files(audio_files, transcripts, report)
        rel = dataset_dir.manifest_of(subset)
        check_rows(read_manifest(dataset, rel, report), transcripts, set(audio_files), shards, rel, report)
        check_official(dataset, subset, len(transcripts), report)
    check_splits(dataset, report)
    check_extra_entries(dataset, records, report)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="verify_dataset.sh",
        description="Check a prepared dataset against its recorded checksums, transcripts and official facts.",
        epilog="Exit status 0: 'Dataset Checksum Passed.'; 1: 'Dataset Checksum Failed.' after the problems "
        "(or an error: no such directory, in use by a download); 2: bad usage.",
    )
    dataset_dir.add_data_dir_argument(parser)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="hashing processes (default %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exit_status.run(lambda: _main(args, argv))


def _main(args: argparse.Namespace, argv: list[str] | None) -> None:
    if args.jobs < 1:
        raise exit_status.UsageError(f"--jobs {args.jobs}: must be at least 1")
    dataset = DatasetDir(args.data_dir)
    if not dataset.root.is_dir():
        print("Dataset Checksum Failed.")
        raise DatasetError(f"--data-dir {dataset.root}: no such directory")
    with dataset.lock(command_line("verify_dataset.sh", argv), shared=True):
        report = verify(dataset.root, args.jobs)
    for note in report.notes:
        print(f"note: {note}")
    for problem in report.problems:
        print(problem)
    print(f"Dataset digest (sha256 of the sorted audio + transcript sha256sum lines): {report.digest}")
    if not report.passed:
        print("Dataset Checksum Failed.", flush=True)
        count = len(report.problems)
        raise DatasetCheckFailed(
            f"{dataset.root}: {count} problem{'s' * (count != 1)} (listed above): the dataset is not as it was prepared"
        )
    print("Dataset Checksum Passed.")


if __name__ == "__main__":
    sys.exit(main())
