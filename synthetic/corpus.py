"""Synthesise a LibriSpeech-format corpus with espeak-ng, for tests, the CPU demo and `make gpu-check`.

Writes DIR/<subset>.tar.gz laid out exactly like LibriSpeech's archives
(LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac, 16 kHz mono 16-bit FLAC,
plus one <speaker>-<chapter>.trans.txt per chapter) and DIR/md5sum.txt, so every later stage
(download from a mirror, md5 check, extraction, preparation) runs unchanged on it.

The archives are byte-for-byte reproducible for a given seed wherever the same pinned wheels are
installed (compared on x86_64; docs/dataset.md states a small corpus's md5s): espeak-ng is the
espeakng-loader wheel's libespeak-ng (synthetic.espeak, no system package), each utterance's
samples depend on its own request only, every random choice is made in the parent process from
seeded generators, tar members have fixed order, times and owners, and the gzip header carries no
time or file name.
"""

import argparse
import gzip
import io
import json
import multiprocessing
import random
import struct
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

import exit_status
from data.files import file_digest, replacing, write_atomically
from data.librispeech import SAMPLE_RATE, SUBSETS, archive_name
from data.progress import progress_bar
from synthetic import espeak
from synthetic.sentences import pool_for_subset, sentences

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the directory holding the synthetic package
# espeak-ng voice names (British English is "en"), each optionally with a "+variant"
VOICES = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4")
SPEED = (145, 185)  # words per minute of a speaker; each utterance varies it by up to SPEED_JITTER
SPEED_JITTER = 10
PITCH = (30, 70)  # espeak-ng's 0-99 pitch scale
MAX_SPEAKERS = 40
UTTERANCES_PER_SPEAKER = 50  # speakers grow with the subset until MAX_SPEAKERS
KEEP_SILENCE = 0.1  # s of leading/trailing silence kept when trimming
SILENCE_LEVEL = 0.01  # |amplitude| below this counts as silence
BATCH = 32  # utterances per worker task: amortises inter-process overhead, keeps progress fluid
MTIME = 1_400_000_000  # fixed member time (2014, like LibriSpeech) so the md5 depends on content only
GZIP_LEVEL = 1  # FLAC barely compresses further; a higher level only costs time


class SynthesisError(exit_status.Failure):
    """espeak-ng (the espeakng-loader wheel) is missing or failed, or the request is malformed; the
    message names the utterance, subset or parameter."""


@dataclass(frozen=True)
class Utterance:
    uid: str  # <speaker>-<chapter>-<utt:04d>
    text: str
    voice: str  # espeak-ng voice name[+variant]
    speed: int  # words per minute
    pitch: int  # 0-99


@dataclass(frozen=True)
class Chapter:
    speaker: int
    chapter: int
    utterances: tuple[Utterance, ...]

    @property
    def directory(self) -> str:
        return f"{self.speaker}/{self.chapter}"


# --- planning: every random choice, made in the parent process ---------------------------------
def _split_evenly(items: list, parts: int) -> list[list]:
    """Contiguous, near-equal slices; the first len % parts slices get one extra item."""
    size, extra = divmod(len(items), parts)
    bounds = [i * size + min(i, extra) for i in range(parts + 1)]
    return [items[bounds[i] : bounds[i + 1]] for i in range(parts)]


def plan_subset(subset: str, texts: list[str], seed: int) -> list[Chapter]:
    """Assign texts to speakers (voice, speed, pitch) and chapters, LibriSpeech-style ids.

    Speaker ids come from a range of their own per subset, so no speaker occurs in two subsets.
    """
    rng = random.Random(f"speakers:{subset}:{seed}")
    n_speakers = min(len(texts), max(2, min(MAX_SPEAKERS, len(texts) // UTTERANCES_PER_SPEAKER)))
    index = list(SUBSETS).index(subset)
    speaker_ids = sorted(rng.sample(range(100 + 1000 * index, 1000 + 1000 * index), n_speakers))
    chapter_ids = iter(sorted(rng.sample(range(10_000 + 20_000 * index, 30_000 + 20_000 * index), 2 * n_speakers)))
    chapters = []
    for speaker, speaker_texts in zip(speaker_ids, _split_evenly(texts, n_speakers)):
        variant = rng.choice(VARIANTS)
        voice = rng.choice(VOICES) + (f"+{variant}" if variant else "")
        speed, pitch = rng.randint(*SPEED), rng.randint(*PITCH)
        n_chapters = 2 if len(speaker_texts) >= 4 else 1
        for chapter_texts in _split_evenly(speaker_texts, n_chapters):
            chapter = next(chapter_ids)
            utterances = tuple(
                Utterance(
                    f"{speaker}-{chapter}-{i:04d}", text, voice, speed + rng.randint(-SPEED_JITTER, SPEED_JITTER), pitch
                )
                for i, text in enumerate(chapter_texts)
            )
            chapters.append(Chapter(speaker, chapter, utterances))
    return chapters


def plan(counts: dict[str, int], seed: int) -> dict[str, list[Chapter]]:
    """Subsets sharing a sentence pool draw one sentence list and take consecutive slices of it
    (in data.librispeech.SUBSETS order), so e.g. train-clean-100 and train-clean-360 never repeat
    each other's sentences."""
    by_pool: dict[str, list[str]] = {}
    for subset in SUBSETS:
        if subset in counts:
            by_pool.setdefault(pool_for_subset(subset), []).append(subset)
    plans = {}
    for pool, subsets in by_pool.items():
        texts = sentences(pool, sum(counts[s] for s in subsets), seed)
        for subset in subsets:
            plans[subset], texts = plan_subset(subset, texts[: counts[subset]], seed), texts[counts[subset] :]
    return {subset: plans[subset] for subset in counts}


# --- rendering: runs in worker processes -------------------------------------------------------
def trim(audio: np.ndarray, rate: int) -> np.ndarray:
    """(S,) -> (S',): drop leading/trailing silence beyond KEEP_SILENCE seconds."""
    loud = np.flatnonzero(np.abs(audio) >= SILENCE_LEVEL)
    if loud.size == 0:
        return audio
    keep = round(KEEP_SILENCE * rate)
    return audio[max(0, loud[0] - keep) : loud[-1] + 1 + keep]


def speak(batch: list[Utterance]) -> list[np.ndarray]:
    """espeak-ng (synthetic.espeak, in a process of its own) -> each utterance's (S,) int16 at 16 kHz,
    silence trimmed."""
    requests = [{"id": u.uid, "text": u.text, "voice": u.voice, "speed": u.speed, "pitch": u.pitch} for u in batch]
    done = subprocess.run(
        [sys.executable, "-m", "synthetic.espeak"],
        input=json.dumps(requests).encode(),
        capture_output=True,
        cwd=PACKAGE_ROOT,  # where `-m synthetic.espeak` finds the very package this module came from
        check=False,
    )
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().removeprefix("error: ")  # its exit_status line
        raise SynthesisError(f"espeak-ng failed (exit {done.returncode}): {message}")
    return [_to_16k_int16(samples) for samples in _decoded(done.stdout, len(batch))]


def _decoded(stream: bytes, count: int) -> list[np.ndarray]:
    """synthetic.espeak's output (per utterance: uint32 count, int16 samples) -> `count` int16 arrays."""
    arrays, position = [], 0
    for _ in range(count):
        (n,) = struct.unpack_from("<I", stream, position)
        arrays.append(np.frombuffer(stream, dtype="<i2", count=n, offset=position + 4))
        position += 4 + 2 * n
    if position != len(stream):
        raise SynthesisError(f"synthetic.espeak wrote {len(stream)} bytes, expected {position}")
    return arrays


def _to_16k_int16(samples: np.ndarray) -> np.ndarray:
    """(S,) int16 at espeak's rate -> (S',) int16 at 16 kHz, silence trimmed."""
    audio = soxr.resample(samples.astype(np.float32) / 32768, espeak.SAMPLE_RATE, SAMPLE_RATE)
    audio = trim(audio, SAMPLE_RATE)
    return np.round(np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)


def flac_bytes(samples: np.ndarray) -> bytes:
    """(S,) int16 -> a 16 kHz mono 16-bit FLAC file's bytes."""
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def render(batch: list[Utterance]) -> list[tuple[bytes, int]]:
    """Worker task: each utterance -> (FLAC bytes, number of samples)."""
    return [(flac_bytes(samples), len(samples)) for samples in speak(batch)]


# --- archiving ----------------------------------------------------------------------------------
def _member(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size = size
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_member(name, len(data)), io.BytesIO(data))


def _batches(chapters: list[Chapter]) -> list[list[Utterance]]:
    return [list(c.utterances[i : i + BATCH]) for c in chapters for i in range(0, len(c.utterances), BATCH)]


def write_archive(path: Path, subset: str, chapters: list[Chapter], rendered, bar) -> float:
    """Stream one subset's tar.gz to a temporary name beside `path`, then rename it into place.

    `rendered` yields render() results for _batches(chapters), in order. Returns audio seconds.
    """
    seconds = 0.0
    with (
        replacing(path) as temporary,
        open(temporary, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=GZIP_LEVEL) as gz,
    ):
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            root = f"LibriSpeech/{subset}"
            for directory in ("LibriSpeech", root):
                tar.addfile(_member(directory, directory=True))
            speakers_done = set()
            for chapter in chapters:
                if chapter.speaker not in speakers_done:
                    speakers_done.add(chapter.speaker)
                    tar.addfile(_member(f"{root}/{chapter.speaker}", directory=True))
                tar.addfile(_member(f"{root}/{chapter.directory}", directory=True))
                lines = []
                for start in range(0, len(chapter.utterances), BATCH):
                    for utterance, (flac, n_samples) in zip(chapter.utterances[start : start + BATCH], next(rendered)):
                        _add_file(tar, f"{root}/{chapter.directory}/{utterance.uid}.flac", flac)
                        lines.append(f"{utterance.uid} {utterance.text}\n")
                        seconds += n_samples / SAMPLE_RATE
                        bar.update(1)
                transcript = f"{root}/{chapter.directory}/{chapter.speaker}-{chapter.chapter}.trans.txt"
                _add_file(tar, transcript, "".join(sorted(lines)).encode())
        gz.flush()
    return seconds


def md5_of(path: Path) -> str:
    return file_digest(path, "md5").hexdigest()


def write_md5sums(out_dir: Path) -> Path:
    """DIR/md5sum.txt: `<md5>  <name>.tar.gz` for every archive in DIR, sorted by name."""
    lines = [f"{md5_of(p)}  {p.name}\n" for p in sorted(out_dir.glob("*.tar.gz"))]
    target = out_dir / "md5sum.txt"
    write_atomically(target, "".join(lines))
    return target


# --- entry points -------------------------------------------------------------------------------
def check_request(counts: dict[str, int], seed: int, jobs: int) -> None:
    for subset, count in counts.items():
        if subset not in SUBSETS:
            raise SynthesisError(f"subset {subset!r}: not a LibriSpeech subset; choose from {', '.join(SUBSETS)}")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise SynthesisError(f"subset {subset}: count {count!r} must be a whole number >= 1")
    if not counts:
        raise SynthesisError("no subsets requested")
    if not isinstance(seed, int) or seed < 0:
        raise SynthesisError(f"seed {seed!r}: must be a whole number >= 0")
    if not isinstance(jobs, int) or jobs < 1:
        raise SynthesisError(f"jobs {jobs!r}: must be a whole number >= 1")
    try:
        espeak.load()  # here, so that a missing wheel is one clear error before any work
    except espeak.EspeakError as err:
        raise SynthesisError(str(err)) from err


def synthesize(out_dir, counts: dict[str, int], seed: int = 1, jobs: int = 2) -> list[Path]:
    """Write DIR/<subset>.tar.gz for each {subset: utterances} and DIR/md5sum.txt; return the archives.

    Workers are spawned (safe in a process that already runs threads, e.g. torch), so a script
    calling this with jobs > 1 needs the usual `if __name__ == "__main__":` guard.
    """
    check_request(counts, seed, jobs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The old md5s go first: an interrupted re-synthesis must not leave new archives beside them.
    (out_dir / "md5sum.txt").unlink(missing_ok=True)
    plans = plan(counts, seed)
    batches = [batch for subset in counts for batch in _batches(plans[subset])]
    pool = multiprocessing.get_context("spawn").Pool(jobs) if jobs > 1 else None
    try:
        rendered = pool.imap(render, batches) if pool else map(render, batches)
        paths = []
        with progress_bar(total=sum(counts.values()), unit="utt", desc="synthesize") as bar:
            for subset in counts:
                bar.set_description(subset)
                path = out_dir / archive_name(subset)
                write_archive(path, subset, plans[subset], rendered, bar)
                paths.append(path)
    finally:
        if pool:
            pool.terminate()
            pool.join()
    write_md5sums(out_dir)
    return paths


def parse_subsets(text: str) -> dict[str, int]:
    """'dev-clean:200,train-clean-100:2000' -> {'dev-clean': 200, 'train-clean-100': 2000}."""
    counts: dict[str, int] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, sep, count = entry.partition(":")
        if not sep:
            raise argparse.ArgumentTypeError(f"{entry!r}: expected NAME:COUNT, e.g. dev-clean:200")
        if name not in SUBSETS:
            raise argparse.ArgumentTypeError(f"{name!r}: not a LibriSpeech subset; choose from {', '.join(SUBSETS)}")
        if name in counts:
            raise argparse.ArgumentTypeError(f"{name!r} is given twice")
        if not count.strip().isdigit() or int(count) < 1:
            raise argparse.ArgumentTypeError(f"{entry!r}: COUNT must be a whole number >= 1")
        counts[name] = int(count)
    if not counts:
        raise argparse.ArgumentTypeError("no subsets given; expected NAME:COUNT,...")
    return counts


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a whole number >= 1")
    return int(text)


def _non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: must be a whole number >= 0")
    return int(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m synthetic.corpus",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Synthesise a LibriSpeech-format corpus (tar.gz archives + md5sum.txt) with espeak-ng.",
        epilog="Example: python -m synthetic.corpus --out /tmp/corpus --subsets train-clean-100:2000,dev-clean:200",
    )
    parser.add_argument("--out", required=True, type=Path, help="directory for <subset>.tar.gz and md5sum.txt")
    parser.add_argument(
        "--subsets", required=True, type=parse_subsets, help=f"NAME:COUNT,... with NAME one of {', '.join(SUBSETS)}"
    )
    parser.add_argument("--seed", type=_non_negative, default=1, help="seed of sentences, voices and ids (default 1)")
    parser.add_argument("--jobs", type=_positive, default=2, help="espeak-ng worker processes (default 2)")
    args = parser.parse_args(argv)
    return exit_status.run(lambda: _main(args))


def _main(args: argparse.Namespace) -> None:
    for path in synthesize(args.out, args.subsets, args.seed, args.jobs):
        print(path)


if __name__ == "__main__":
    sys.exit(main())
