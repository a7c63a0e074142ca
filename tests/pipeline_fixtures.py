"""Tiny LibriSpeech-format archives for the download tests: real FLAC, real tar.gz, an md5sum.txt,
and archives with hostile members."""

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
WORDS = ("THE", "CAT", "SAT", "ON", "A", "MAT", "IT'S", "GOOD", "DAY")


def write_subset(root: Path, subset: str, chapters: int = 2, per_chapter: int = 2, seed: int = 0) -> Path:
    """Write root/LibriSpeech/<subset>/<spk>/<chap>/ with noise FLACs (0.2-0.4 s) and trans.txt files.

    Noise keeps the archive incompressible, so byte offsets in tests mean what they say.
    Returns root/LibriSpeech/<subset>.
    """
    rng = np.random.default_rng(seed)
    subset_dir = Path(root) / "LibriSpeech" / subset
    for c in range(chapters):
        speaker, chapter = 100 + c, 1000 + c
        chapter_dir = subset_dir / str(speaker) / str(chapter)
        chapter_dir.mkdir(parents=True, exist_ok=True)
        lines = []
        for u in range(per_chapter):
            uid = f"{speaker}-{chapter}-{u:04d}"
            audio = (0.3 * rng.standard_normal(int(rng.uniform(0.2, 0.4) * SAMPLE_RATE))).clip(-1, 1)
            sf.write(chapter_dir / f"{uid}.flac", audio.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
            lines.append(f"{uid} {' '.join(rng.choice(WORDS, size=3))}\n")
        (chapter_dir / f"{speaker}-{chapter}.trans.txt").write_text("".join(lines))
    return subset_dir


def make_archive(src_root: Path, subset: str, out_dir: Path) -> Path:
    """Pack src_root/LibriSpeech/<subset> plus a top-level README.TXT as out_dir/<subset>.tar.gz."""
    src_root, out_dir = Path(src_root), Path(out_dir)
    (src_root / "LibriSpeech" / "README.TXT").write_text("LibriSpeech test fixture\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / f"{subset}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src_root / "LibriSpeech" / "README.TXT", "LibriSpeech/README.TXT")
        tar.add(src_root / "LibriSpeech" / subset, f"LibriSpeech/{subset}")
    return archive


def md5_of(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def write_md5sums(out_dir: Path, overrides: dict[str, str] | None = None) -> Path:
    """out_dir/md5sum.txt for every *.tar.gz there; overrides maps archive name -> md5 to state."""
    out_dir = Path(out_dir)
    table = {a.name: md5_of(a) for a in sorted(out_dir.glob("*.tar.gz"))} | (overrides or {})
    path = out_dir / "md5sum.txt"
    path.write_text("".join(f"{md5}  {name}\n" for name, md5 in table.items()))
    return path


def hostile_archive(out_dir: Path, subset: str, kind: str) -> tuple[Path, str]:
    """An archive with one good file and one hostile member of `kind`; returns (path, member name).

    kinds: dotdot, absolute, symlink (escaping), hardlink (escaping), device.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / f"{subset}.tar.gz"
    base = f"LibriSpeech/{subset}"
    with tarfile.open(archive, "w:gz") as tar:
        _add_bytes(tar, f"{base}/1/2/1-2.trans.txt", b"1-2-0000 GOOD\n")
        member = tarfile.TarInfo(
            {
                "dotdot": f"{base}/../../escaped.txt",
                "absolute": "/tmp/absolute-escape.txt",
                "symlink": f"{base}/link",
                "hardlink": f"{base}/hard",
                "device": f"{base}/dev",
            }[kind]
        )
        if kind == "symlink":
            member.type, member.linkname = tarfile.SYMTYPE, "../../../outside"
        elif kind == "hardlink":
            member.type, member.linkname = tarfile.LNKTYPE, "../outside"
        elif kind == "device":
            member.type, member.devmajor, member.devminor = tarfile.CHRTYPE, 1, 3
        if member.type == tarfile.REGTYPE:
            _add_bytes(tar, member.name, b"escaped\n")
        else:
            tar.addfile(member)
    return archive, member.name


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
