"""Extracted LibriSpeech -> float16 feature shards (one per chapter) + JSON Lines manifests.

Per subset: chapters are processed in parallel (one chapter's audio in memory per worker), each
writing features/<subset>/<spk>-<chap>.npy; then manifests/<subset>.jsonl (ascending duration,
ties by id), the subset's feature sums (data.normalization: what normalization=global's statistics
are made of), checksums/<subset>.sha256 and .state/prepare-<subset>.done; finally the split
manifests manifests/{train,val,test}.jsonl are rebuilt from every prepared subset.
The layout is data.dataset_dir's, the manifest row data.manifest's.
"""

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

import exit_status
import params
from data import dataset_dir, normalization, workers
from data.dataset_dir import DatasetDir, DatasetError, command_line
from data.features import extract, frame_count
from data.files import save_npy_atomically, sha256_file, write_atomically, write_if_changed
from data.librispeech import SPLITS, SUBSETS, read_transcripts, transcript_file
from data.manifest import check_rows, make_row, merged_lines, row_key, row_line, split_sources
from data.progress import progress_bar


class PrepareError(DatasetError):
    """Bad input data or state; the message names the file or utterance."""


@dataclass(frozen=True)
class ChapterTask:
    data_dir: str
    chapter: str  # LibriSpeech/<subset>/<spk>/<chap>, relative to data_dir
    p: params.Params


@dataclass
class ChapterResult:
    rows: list[dict]
    hashes: list[tuple[str, str]]  # (path relative to data_dir, sha256)
    audio_seconds: float
    chapter: str
    sums: normalization.FeatureSums  # of the chapter's stored (float16) frames


# ---------------------------------------------------------------- one chapter's inputs


def chapter_utterances(chapter_dir: Path) -> tuple[dict[str, str], list[Path], str]:
    """The chapter's transcripts, its FLACs (sorted by id) and the trans.txt name, cross-checked."""
    # Listed first: an unreadable chapter directory is named as such, not by the transcript inside it.
    flacs = sorted(path for path in _entries(chapter_dir, "file") if path.suffix == ".flac")
    trans = chapter_dir / transcript_file(chapter_dir)
    try:
        data = trans.read_bytes()
    except FileNotFoundError:
        raise PrepareError(f"{trans}: transcript file missing") from None
    transcripts, problems = read_transcripts(data, f"{chapter_dir.parent.name}-{chapter_dir.name}-", str(trans))
    if problems:  # the first is enough: nothing of a bad chapter is kept
        raise PrepareError(problems[0])
    for flac in flacs:
        if flac.stem not in transcripts:
            raise PrepareError(f"utterance {flac.stem}: {flac} has no line in {trans}")
    have = {flac.stem for flac in flacs}
    for uid in transcripts:
        if uid not in have:
            raise PrepareError(f"utterance {uid}: listed in {trans} but {chapter_dir / (uid + '.flac')} is missing")
    return transcripts, flacs, trans.name


def check_audio(path: Path, sample_rate: int, channels: int, p: params.Params) -> None:
    if sample_rate != p.sample_rate:
        raise PrepareError(f"utterance {path.stem}: {path} is {sample_rate} Hz, expected sample_rate={p.sample_rate}")
    if channels != 1:
        raise PrepareError(f"utterance {path.stem}: {path} has {channels} channels, expected mono")


# ---------------------------------------------------------------- the per-chapter worker


def _decode(path: Path, p: params.Params) -> tuple[np.ndarray, str]:
    """FLAC -> samples (S,) float32 and the file's sha256."""
    # Hashed first: an unreadable file is then an OSError naming it ("permission denied"), where
    # soundfile would only say "System error". The decode reads it back from the page cache.
    digest = sha256_file(path)
    try:
        # Decoding from the path, not from the bytes just hashed: soundfile's in-memory reader
        # calls back into Python per block and costs ~70% more than the whole decode.
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        raise PrepareError(f"utterance {path.stem}: cannot decode {path} ({err})") from None
    check_audio(path, rate, samples.shape[1], p)
    return samples[:, 0], digest


def _row(task: ChapterTask, uid: str, transcript: str, samples: int, offset: int, shard: str) -> dict:
    duration, frames = round(samples / task.p.sample_rate, 4), frame_count(samples, task.p)
    return make_row(
        uid, Path(task.chapter).parts[1], duration, frames, transcript, f"{task.chapter}/{uid}.flac", shard, offset
    )


def process_chapter(task: ChapterTask) -> ChapterResult:
    """Decode, extract and store one chapter: features/<subset>/<spk>-<chap>.npy (sum T, F) float16."""
    root = Path(task.data_dir)
    chapter_dir = root / task.chapter
    transcripts, flacs, trans_name = chapter_utterances(chapter_dir)
    shard = dataset_dir.shard_of(task.chapter)
    trans_hash = (f"{task.chapter}/{trans_name}", sha256_file(chapter_dir / trans_name))
    rows, hashes, audio, offset = [], [trans_hash], [], 0
    for flac in flacs:  # the whole chapter's audio first, to size the shard: ~25 MB at most
        samples, digest = _decode(flac, task.p)
        if samples.shape[0] <= task.p.n_fft // 2:
            raise PrepareError(f"utterance {flac.stem}: {flac} has only {samples.shape[0]} samples")
        rows.append(_row(task, flac.stem, transcripts[flac.stem], samples.shape[0], offset, shard))
        hashes.append((f"{task.chapter}/{flac.name}", digest))
        audio.append(samples)
        offset += rows[-1]["frames"]
    frames = np.empty((offset, task.p.n_features), np.float16)
    out = torch.from_numpy(frames)
    with torch.inference_mode():
        for row, samples in zip(rows, audio):
            # copy_ converts to float16 and lays out (T, F) in one pass, straight into the shard.
            out[row["offset"] : row["offset"] + row["frames"]].copy_(extract(torch.from_numpy(samples), task.p))
    save_npy_atomically(root / shard, frames)
    # sha256 read back from the page cache: cheaper than np.save into memory, which copies the array twice.
    hashes.append((shard, sha256_file(root / shard)))
    sums = normalization.FeatureSums.of(frames)
    return ChapterResult(rows, hashes, sum(r["duration"] for r in rows), task.chapter, sums)


def _init_worker() -> None:
    # One chapter per process is the parallelism; intra-op threads would only contend for cores.
    torch.set_num_threads(1)


# ---------------------------------------------------------------- subsets, splits, config


def _entries(directory: Path, kind: str) -> list[Path]:
    """The directories (kind "dir") or files ("file") in directory, sorted.

    os.scandir, not glob: glob silently skips a directory it cannot read, and a subset would be
    prepared without that speaker. Here an unreadable directory is an OSError naming it.
    """
    with os.scandir(directory) as entries:
        return sorted(Path(e.path) for e in entries if (e.is_dir() if kind == "dir" else e.is_file()))


def find_chapters(data_dir: Path, subset: str) -> list[str]:
    """LibriSpeech/<subset>/<spk>/<chap> directories (relative to data_dir), sorted."""
    base = DatasetDir(data_dir).audio(subset)
    if not base.is_dir():
        raise PrepareError(f"subset {subset}: {base} does not exist (download and extract it first)")
    chapters = [chapter for speaker in _entries(base, "dir") for chapter in _entries(speaker, "dir")]
    if not chapters:
        raise PrepareError(f"subset {subset}: no <speaker>/<chapter> directories under {base}")
    return [c.relative_to(data_dir).as_posix() for c in chapters]


def _run_chapters(tasks: list[ChapterTask], jobs: int, subset: str):
    """Yield ChapterResults (any order) with a progress bar."""
    bar = progress_bar(total=len(tasks), unit="chapter", desc=subset)
    start, utterances, seconds = time.perf_counter(), 0, 0.0
    if jobs <= 1:
        results = map(process_chapter, tasks)
        pool = None
    else:
        pool = workers.pool(jobs, initializer=_init_worker)
        results = pool.imap_unordered(process_chapter, tasks)
    try:
        for result in results:
            utterances += len(result.rows)
            seconds += result.audio_seconds
            rate = seconds / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(utt=utterances, audio_s_per_s=f"{rate:.0f}", refresh=False)
            bar.update()
            yield result
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()


def prepare_subset(dataset: DatasetDir, subset: str, p: params.Params, jobs: int) -> int:
    """Shards, manifest, checksums and marker of one subset; returns its utterance count.

    Every chapter's shard is recomputed: one left by an earlier (killed, or other-config) run may be
    damaged or stale in ways no cheap check sees, and recomputing costs about 1 CPU-s per 3000 audio-s.
    """
    features_dir = dataset.features(subset)
    if features_dir.is_dir():
        # Temporary files of a killed run: safe to delete, as the caller holds the directory's lock.
        for stale in features_dir.glob(".*.tmp.*"):
            stale.unlink()
    tasks = [ChapterTask(str(dataset.root), chapter, p) for chapter in find_chapters(dataset.root, subset)]
    rows, hashes, sums = [], [], {}
    for result in _run_chapters(tasks, jobs, subset):
        rows.extend(result.rows)
        hashes.extend(result.hashes)
        sums[result.chapter] = result.sums
    rows.sort(key=row_key)
    manifest = dataset_dir.manifest_of(subset)
    check_rows(rows, where=str(dataset.path(manifest)))  # what every reader will check: before it is written
    write_atomically(dataset.path(manifest), "".join(map(row_line, rows)))
    hashes.append((manifest, sha256_file(dataset.path(manifest))))
    total = normalization.FeatureSums.zeros(p.n_features)
    for chapter in sorted(sums):  # a fixed order: float64 sums then never depend on which worker finished first
        total = total + sums[chapter]
    recorded = normalization.write_sums(dataset, subset, total)
    hashes.append((recorded, sha256_file(dataset.path(recorded))))
    hashes.append((dataset_dir.FEATURE_CONFIG, sha256_file(dataset.feature_config)))
    write_atomically(dataset.checksums(subset), dataset_dir.checksum_text(hashes))
    dataset.mark("prepare", subset)
    return len(rows)


def rebuild_splits(dataset: DatasetDir) -> list[str]:
    """manifests/<split>.jsonl = merge (by duration, id) of the split's prepared subsets.

    Every split is rebuilt (so one left stale by a run killed after a subset's marker is put
    right), but written only if its content changed; returns the splits written.
    """
    written = []
    for split in SPLITS:
        sources = split_sources(dataset, split)
        if not sources:
            continue
        try:
            lines = merged_lines([dataset.manifest(s) for s in sources])
            if write_if_changed(dataset.manifest(split), lines):
                written.append(split)
        except DatasetError as err:
            raise PrepareError(f"{err}; prepare its subset again with --force") from None
    return written


def check_feature_config(dataset: DatasetDir, p: params.Params, force: bool) -> None:
    """Record p.feature_config() in features/features.json.

    A different existing config is an error unless force (then every prepared subset is stale).
    """
    wanted = p.feature_config()
    if dataset.feature_config.exists():
        try:
            dataset.check_feature_config(wanted, advice="pass the matching parameters, or --force to re-prepare")
            return
        except dataset_dir.FeatureConfigError:
            if not force:
                raise
        except DatasetError as err:
            raise PrepareError(f"{err}; delete it and prepare again") from None
        for subset in dataset.marked("prepare"):
            dataset.unmark("prepare", subset)
    dataset.record_feature_config(wanted)


def extracted_subsets(dataset: DatasetDir) -> list[str]:
    """Official subsets with a .state/extract-<subset>.done marker, in the official order."""
    return [s for s in dataset.marked("extract") if s in SUBSETS]


def prepare(data_dir, subsets=None, p: params.Params | None = None, jobs: int = 1, force: bool = False) -> None:
    """Prepare `subsets` (default: every extracted one) under data_dir with `jobs` processes.

    Subsets already marked prepared are skipped (no work) unless force, which redoes them and accepts a
    feature config different from features/features.json.
    """
    dataset = DatasetDir(data_dir)
    p = p or params.make()
    if jobs < 1:
        raise exit_status.UsageError(f"--jobs {jobs}: must be at least 1")
    unknown = [s for s in subsets or [] if s not in SUBSETS]
    if unknown:
        raise exit_status.UsageError(f"--subsets: unknown subset(s) {', '.join(unknown)}; known: {', '.join(SUBSETS)}")
    subsets = list(subsets) if subsets else extracted_subsets(dataset)
    if not subsets:
        raise PrepareError(
            f"{data_dir}: no extracted subsets (.state/extract-<subset>.done); download first or pass --subsets"
        )
    check_feature_config(dataset, p, force)
    todo = [s for s in subsets if force or not dataset.is_marked("prepare", s)]
    if not todo:
        print(f"already prepared: {', '.join(subsets)}", file=sys.stderr)
    for subset in todo:
        dataset.unmark("prepare", subset)
        count = prepare_subset(dataset, subset, p, jobs)
        print(f"prepared {subset}: {count} utterances", file=sys.stderr)
    for split in rebuild_splits(dataset):
        print(f"wrote {dataset_dir.manifest_of(split)}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data.prepare",
        description="Turn extracted LibriSpeech subsets into float16 feature shards and manifests.",
        epilog="Feature parameters (window_size=0.01 feature=mfcc ...) are key=value words; see params.py. "
        "Exit status: 0 done, 1 error (bad data, a full disk, the directory in use by another run), 2 bad usage.",
    )
    dataset_dir.add_data_dir_argument(parser)
    parser.add_argument("--subsets", help="comma-separated subsets (default: every extracted one)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="redo prepared subsets; accept a new feature config")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="parameter overrides")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exit_status.run(lambda: _main(args, argv))


def _main(args: argparse.Namespace, argv: list[str] | None) -> None:
    p = params.parse(args.overrides)
    subsets = [s.strip() for s in args.subsets.split(",") if s.strip()] if args.subsets else None
    dataset = DatasetDir(args.data_dir)
    if not dataset.root.is_dir():
        raise PrepareError(f"--data-dir {dataset.root}: no such directory; download the data first")
    with dataset.lock(command_line("python -m data.prepare", argv)):
        prepare(dataset.root, subsets, p, args.jobs, args.force)


if __name__ == "__main__":
    sys.exit(main())
