"""Tiny extracted LibriSpeech-format trees for tests: tone + noise FLACs, trans.txt files and the
.state markers download would have written; manifest rows; and a way to run a command that file
permissions stop."""

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data.manifest import make_row

WORDS = ("THE", "CAT", "SAT", "ON", "A", "MAT", "IT'S", "GOOD", "DAY", "NORTHANGER", "ABBEY")


def utterance_audio(rng: np.random.Generator, seconds: float, sample_rate: int = 16000) -> np.ndarray:
    """(S,) float32 in [-1, 1]: a gliding tone under light noise, like voiced speech in shape only."""
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    pitch = rng.uniform(100, 300) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
    tone = 0.3 * np.sin(2 * np.pi * np.cumsum(pitch) / sample_rate)
    return (tone + 0.02 * rng.standard_normal(n)).astype(np.float32)


def write_chapter(
    chapter_dir: Path, speaker: int, chapter: int, lengths: list[float], rng, sample_rate=16000
) -> list[str]:
    """Write <spk>-<chap>-NNNN.flac for each length (s) and the chapter's trans.txt; return the ids."""
    chapter_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, seconds in enumerate(lengths):
        uid = f"{speaker}-{chapter}-{i:04d}"
        sf.write(chapter_dir / f"{uid}.flac", utterance_audio(rng, seconds, sample_rate), sample_rate, subtype="PCM_16")
        words = rng.choice(WORDS, size=rng.integers(1, 5))
        lines.append(f"{uid} {' '.join(words)}\n")
    (chapter_dir / f"{speaker}-{chapter}.trans.txt").write_text("".join(lines))
    return [line.split()[0] for line in lines]


def write_tree(data_dir: Path, subsets: dict[str, tuple[int, int]], seed: int = 0, seconds=(0.3, 1.2)) -> Path:
    """Write LibriSpeech/<subset>/<spk>/<chap>/ for {subset: (chapters, utterances per chapter)}.

    Marks each subset extracted (and downloaded, with a non-official md5) as data.download would.
    Returns data_dir.
    """
    data_dir = Path(data_dir)
    rng = np.random.default_rng(seed)
    state = data_dir / ".state"
    state.mkdir(parents=True, exist_ok=True)
    for s_index, (subset, (chapters, per_chapter)) in enumerate(sorted(subsets.items())):
        for c in range(chapters):
            speaker, chapter = 100 * (s_index + 1) + c % 2, 1000 * (s_index + 1) + c
            lengths = [float(x) for x in rng.uniform(*seconds, size=per_chapter).round(3)]
            write_chapter(
                data_dir / "LibriSpeech" / subset / str(speaker) / str(chapter), speaker, chapter, lengths, rng
            )
        (state / f"download-{subset}.done").write_text(hashlib.md5(subset.encode()).hexdigest() + "\n")
        (state / f"extract-{subset}.done").write_text("")
    return data_dir


def unprivileged(argv: list[str]) -> list[str]:
    """argv run so that file permissions apply to it: as it is for a normal user; for root, through
    setpriv without the capabilities that let root read any file (root owns the test's files, so a
    mode of 000 then shuts it out too). pytest.skip where root cannot drop them."""
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable to the command")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", *argv]


def manifest_row(i: int, **changes) -> dict:
    """The i-th of a run of valid manifest rows (ascending duration, three shards), with `changes`."""
    return (
        make_row(
            f"1-2-{i:04d}",
            "dev",
            0.5 + i / 100,
            40 + i,
            "A CAT",
            f"LibriSpeech/dev/1/2/1-2-{i:04d}.flac",
            f"features/dev/1-{i % 3}.npy",
            7 * i,
        )
        | changes
    )
