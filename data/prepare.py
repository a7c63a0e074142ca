"""Extracted LibriSpeech -> float16 feature shards (one per chapter) + JSON Lines manifests.

Per subset: chapters are processed in parallel (one chapter's audio in memory per worker), each
writing features/<subset>/<spk>-<chap>.npy; then manifests/<subset>.jsonl (ascending duration,
ties by id), checksums/<subset>.sha256 and .state/prepare-<subset>.done; finally the split
manifests manifests/{train,val,test}.jsonl are rebuilt from every prepared subset.
See ARCHITECTURE.md for the layout and the manifest row.
"""

import argparse
import hashlib
import heapq
import json
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

import params
from data import labels
from data.features import extract, frame_count
from data.files import replacing, write_atomically
from data.librispeech import SPLITS, SUBSETS
from data.progress import progress_bar


class PrepareError(ValueError):
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


# ---------------------------------------------------------------- small file helpers


def write_atomic(path: Path, data: bytes | str) -> str:
    """Write all or nothing; return the content's sha256."""
    data = data.encode() if isinstance(data, str) else data
    write_atomically(path, data)
    return hashlib.sha256(data).hexdigest()


def save_npy_atomic(path: Path, array: np.ndarray) -> str:
    """np.save all or nothing; return the file's sha256 (read back from the page cache: cheaper than
    np.save into memory, which copies the array twice)."""
    with replacing(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)
    return sha256_file(path)


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_transcripts(path: Path, prefix: str) -> dict[str, str]:
    """<spk>-<chap>.trans.txt -> {utterance id: normalised transcript}; every id must start with prefix."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PrepareError(f"{path}: transcript file missing") from None
    except UnicodeDecodeError as err:
        raise PrepareError(f"{path}: not UTF-8 ({err})") from None
    transcripts = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        uid, _, words = line.strip().partition(" ")
        if not uid.startswith(prefix) or not words.split():
            raise PrepareError(f"{path}:{number}: expected '{prefix}NNNN TRANSCRIPT', got {line!r}")
        if uid in transcripts:
            raise PrepareError(f"{path}:{number}: utterance {uid} listed twice")
        try:
            transcript = labels.normalise(words)
            labels.encode(transcript)
        except labels.UnknownCharacter as err:
            raise PrepareError(f"utterance {uid} ({path}:{number}): {err}") from None
        transcripts[uid] = transcript
    return transcripts


def chapter_utterances(chapter_dir: Path) -> tuple[dict[str, str], list[Path], str]:
    """The chapter's transcripts, its FLACs (sorted by id) and the trans.txt name, cross-checked."""
    speaker, chapter = chapter_dir.parent.name, chapter_dir.name
    trans = chapter_dir / f"{speaker}-{chapter}.trans.txt"
    transcripts = read_transcripts(trans, f"{speaker}-{chapter}-")
    flacs = sorted(chapter_dir.glob("*.flac"))
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
    try:
        # Decoding from the path, not from the bytes hashed below: soundfile's in-memory reader
        # calls back into Python per block and costs ~70% more than the whole decode.
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        raise PrepareError(f"utterance {path.stem}: cannot decode {path} ({err})") from None
    check_audio(path, rate, samples.shape[1], p)
    return samples[:, 0], sha256_file(path)


def _row(task: ChapterTask, uid: str, transcript: str, samples: int, offset: int, shard: str) -> dict:
    subset = Path(task.chapter).parts[1]
    return {
        "id": uid,
        "subset": subset,
        "duration": round(samples / task.p.sample_rate, 4),
        "frames": frame_count(samples, task.p),
        "transcript": transcript,
        "audio": f"{task.chapter}/{uid}.flac",
        "features": shard,
        "offset": offset,
    }


def shard_path(chapter: str) -> str:
    """LibriSpeech/<subset>/<spk>/<chap> -> features/<subset>/<spk>-<chap>.npy"""
    _, subset, speaker, chap = Path(chapter).parts
    return f"features/{subset}/{speaker}-{chap}.npy"


def process_chapter(task: ChapterTask) -> ChapterResult:
    """Decode, extract and store one chapter: features/<subset>/<spk>-<chap>.npy (sum T, F) float16."""
    root = Path(task.data_dir)
    chapter_dir = root / task.chapter
    transcripts, flacs, trans_name = chapter_utterances(chapter_dir)
    shard = shard_path(task.chapter)
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
    hashes.append((shard, save_npy_atomic(root / shard, frames)))
    return ChapterResult(rows, hashes, sum(r["duration"] for r in rows))


def _init_worker() -> None:
    # One chapter per process is the parallelism; intra-op threads would only contend for cores.
    torch.set_num_threads(1)


# ---------------------------------------------------------------- subsets, splits, config


def find_chapters(data_dir: Path, subset: str) -> list[str]:
    """LibriSpeech/<subset>/<spk>/<chap> directories (relative to data_dir), sorted."""
    base = data_dir / "LibriSpeech" / subset
    if not base.is_dir():
        raise PrepareError(f"subset {subset}: {base} does not exist (download and extract it first)")
    chapters = sorted(c for c in base.glob("*/*") if c.is_dir())
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
        pool = multiprocessing.get_context().Pool(jobs, initializer=_init_worker)
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


def _state(data_dir: Path, stage: str, subset: str) -> Path:
    return data_dir / ".state" / f"{stage}-{subset}.done"


def _sort_key(row: dict) -> tuple[float, str]:
    return row["duration"], row["id"]


def prepare_subset(data_dir: Path, subset: str, p: params.Params, jobs: int) -> int:
    """Shards, manifest, checksums and marker of one subset; returns its utterance count.

    Every chapter's shard is recomputed: one left by an earlier (killed, or other-config) run may be
    damaged or stale in ways no cheap check sees, and recomputing costs about 1 CPU-s per 3000 audio-s.
    """
    features_dir = data_dir / "features" / subset
    if features_dir.is_dir():
        for stale in features_dir.glob(".*.tmp.*"):  # left by a killed run
            stale.unlink()
    tasks = [ChapterTask(str(data_dir), chapter, p) for chapter in find_chapters(data_dir, subset)]
    rows, hashes = [], []
    for result in _run_chapters(tasks, jobs, subset):
        rows.extend(result.rows)
        hashes.extend(result.hashes)
    rows.sort(key=_sort_key)
    manifest = f"manifests/{subset}.jsonl"
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    hashes.append((manifest, write_atomic(data_dir / manifest, text)))
    lines = "".join(f"{digest}  {path}\n" for path, digest in sorted(hashes))
    write_atomic(data_dir / "checksums" / f"{subset}.sha256", lines)
    write_atomic(_state(data_dir, "prepare", subset), "")
    return len(rows)


def _manifest_rows(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                try:
                    row = json.loads(line)
                    key = _sort_key(row)
                except (ValueError, TypeError, KeyError) as err:
                    raise PrepareError(
                        f"{path}:{number}: not a manifest row ({err}); prepare its subset again with --force"
                    ) from None
                yield key, line
    except FileNotFoundError:
        raise PrepareError(
            f"{path}: missing although its subset is marked prepared; prepare it again with --force"
        ) from None
    except UnicodeDecodeError as err:
        raise PrepareError(f"{path}: not UTF-8 ({err}); prepare its subset again with --force") from None


def _same_bytes(a: Path, b: Path) -> bool:
    """Whether both files exist with the same bytes (compared in chunks, not cached like filecmp)."""
    try:
        if a.stat().st_size != b.stat().st_size:
            return False
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while chunk := fa.read(1 << 20):
                if chunk != fb.read(len(chunk)):
                    return False
        return True
    except FileNotFoundError:
        return False


def write_if_changed(path: Path, lines) -> bool:
    """Write the lines to a temp name; replace path only if the bytes differ (else leave path and its
    mtime alone). Returns whether path was (re)written."""
    with replacing(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.writelines(lines)
        if _same_bytes(tmp, path):
            tmp.unlink()
            return False
    return True


def rebuild_splits(data_dir: Path) -> list[str]:
    """manifests/<split>.jsonl = merge (by duration, id) of the split's prepared subsets.

    Every split is rebuilt (so one left stale by a run killed after a subset's marker is put
    right), but written only if its content changed; returns the splits written.
    """
    written = []
    for split, members in SPLITS.items():
        prepared = [s for s in members if _state(data_dir, "prepare", s).exists()]
        if not prepared:
            continue
        streams = [_manifest_rows(data_dir / "manifests" / f"{s}.jsonl") for s in prepared]
        merged = (line for _, line in heapq.merge(*streams, key=lambda item: item[0]))
        if write_if_changed(data_dir / "manifests" / f"{split}.jsonl", merged):
            written.append(split)
    return written


def check_feature_config(data_dir: Path, p: params.Params, force: bool) -> None:
    """Record p.feature_config() in features/features.json.

    A different existing config is an error unless force (then every prepared subset is stale).
    """
    path = data_dir / "features" / "features.json"
    wanted = p.feature_config()
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise PrepareError(f"{path}: not valid JSON ({err}); delete it and prepare again") from None
        if existing == wanted:
            return
        if not force:
            raise PrepareError(
                f"{path} records feature config {json.dumps(existing, sort_keys=True)} but this run asks for "
                f"{json.dumps(wanted, sort_keys=True)}; pass the matching parameters, or --force to re-prepare"
            )
        for marker in (data_dir / ".state").glob("prepare-*.done"):
            marker.unlink()
    write_atomic(path, json.dumps(wanted, indent=1, sort_keys=True) + "\n")


def extracted_subsets(data_dir: Path) -> list[str]:
    """Subsets with a .state/extract-<subset>.done marker, in the official order."""
    return [s for s in SUBSETS if _state(data_dir, "extract", s).exists()]


def prepare(data_dir, subsets=None, p: params.Params | None = None, jobs: int = 1, force: bool = False) -> None:
    """Prepare `subsets` (default: every extracted one) under data_dir with `jobs` processes.

    Subsets already marked prepared are skipped (no work) unless force, which redoes them and accepts a
    feature config different from features/features.json.
    """
    data_dir = Path(data_dir)
    p = p or params.make()
    subsets = list(subsets) if subsets else extracted_subsets(data_dir)
    if not subsets:
        raise PrepareError(
            f"{data_dir}: no extracted subsets (.state/extract-<subset>.done); download first or pass --subsets"
        )
    unknown = [s for s in subsets if s not in SUBSETS]
    if unknown:
        raise PrepareError(f"unknown subset(s) {', '.join(unknown)}; known: {', '.join(SUBSETS)}")
    if jobs < 1:
        raise PrepareError(f"--jobs {jobs}: must be at least 1")
    check_feature_config(data_dir, p, force)
    todo = [s for s in subsets if force or not _state(data_dir, "prepare", s).exists()]
    if not todo:
        print(f"already prepared: {', '.join(subsets)}", file=sys.stderr)
    for subset in todo:
        _state(data_dir, "prepare", subset).unlink(missing_ok=True)
        count = prepare_subset(data_dir, subset, p, jobs)
        print(f"prepared {subset}: {count} utterances", file=sys.stderr)
    for split in rebuild_splits(data_dir):
        print(f"wrote manifests/{split}.jsonl", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data.prepare",
        description="Turn extracted LibriSpeech subsets into float16 feature shards and manifests.",
        epilog="Feature parameters (window_size=0.01 feature=mfcc ...) are key=value words; see params.py.",
    )
    parser.add_argument("--data-dir", default="LibriSpeech_dataset", help="dataset directory (default %(default)s)")
    parser.add_argument("--subsets", help="comma-separated subsets (default: every extracted one)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="redo prepared subsets; accept a new feature config")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="parameter overrides")
    args = parser.parse_args(argv)
    try:
        p = params.parse(args.overrides)
        subsets = [s.strip() for s in args.subsets.split(",") if s.strip()] if args.subsets else None
        prepare(args.data_dir, subsets, p, args.jobs, args.force)
    except (PrepareError, params.ParamError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
