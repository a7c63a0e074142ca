"""Extracting one subset's archive safely, and only if it holds exactly the expected bytes.

The archive is extracted into a temporary directory of the dataset directory (unique to the run),
refusing unsafe members (tarfile's 'data' filter as a second guard), while it is read to its end
through md5: only if every byte is the expected one is LibriSpeech/<subset> moved into place, in one
rename. What to extract when, and the stage markers, are data.download's.

    extract_subset(dataset, subset, expected_md5) -> LibriSpeech/<subset> in place
"""

import hashlib
import os
import shutil
import sys
import tarfile
import threading
import zlib
from pathlib import Path, PurePosixPath

from data.dataset_dir import DatasetDir, audio_dir
from data.files import CHUNK, naming
from exit_status import Failure


class ExtractError(Failure):
    """An archive that cannot or must not be extracted; the message names it (and the member)."""


class ArchiveChanged(ExtractError):
    """The archive's bytes are not the expected ones: it has to be downloaded again."""


def check_tar_filters() -> None:
    """Safe extraction relies on tarfile's extraction filters (filter="data"), new in Python 3.10.12 and
    3.11.4 (pyproject.toml's requires-python)."""
    if not hasattr(tarfile, "data_filter"):
        version = ".".join(map(str, sys.version_info[:3]))
        raise ExtractError(
            f"this Python ({version}, {sys.executable}) has no tarfile extraction filters "
            "(tarfile.data_filter), needed for safe extraction: use Python 3.10.12+ or 3.11.4+"
        )


def _inside(path: PurePosixPath) -> bool:
    """Whether a relative archive path stays inside the extraction root once normalised."""
    depth = 0
    for part in path.parts:
        depth += -1 if part == ".." else 0 if part in ("", ".") else 1
        if depth < 0:
            return False
    return True


def check_member(archive: Path, member: tarfile.TarInfo) -> None:
    """Refuse a member that could write outside the target or create a device."""
    name = PurePosixPath(member.name)
    reason = None
    if not name.parts:
        reason = "empty name"
    elif name.is_absolute() or member.name.startswith(("/", "\\")) or ":" in name.parts[0]:
        reason = "absolute path"
    elif ".." in name.parts:
        reason = "'..' in its path"
    elif member.isdev():
        reason = "device or FIFO"
    elif member.issym():
        target = PurePosixPath(member.linkname)
        if target.is_absolute() or not _inside(name.parent / target):
            reason = f"symlink to {member.linkname!r}, outside the target"
    elif member.islnk():
        target = PurePosixPath(member.linkname)
        if target.is_absolute() or not _inside(target):
            reason = f"hard link to {member.linkname!r}, outside the target"
    elif not (member.isfile() or member.isdir()):
        reason = "unsupported member type"
    if reason:
        raise ExtractError(f"{archive}: refusing to extract member {member.name!r}: {reason}")


def extract_subset(dataset: DatasetDir, subset: str, expected_md5: str, stop: threading.Event | None = None) -> None:
    """LibriSpeech/<subset> from archives/<subset>.tar.gz via a temporary directory, moved into place.

    ArchiveChanged if the archive's md5 is not expected_md5 (then nothing is extracted). stop: set
    (on Ctrl-C) by the thread that started this one; extraction then stops at its next member,
    raising KeyboardInterrupt, with nothing moved into place.
    """
    archive = dataset.archive(subset)
    # Temporary directories of killed runs: ours to delete, as this run holds the directory's lock.
    # This run's own has a name no other run uses, in case the lock does not work (NFS without flock).
    for leftover in dataset.extraction_dirs(subset):
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = dataset.new_extraction_dir(subset)
    with naming(tmp):
        tmp.mkdir()
    try:
        extract_checked(archive, expected_md5, tmp, stop)
        _move_into_place(archive, subset, tmp, dataset.librispeech)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _HashingReader:
    """A file read through md5, so that extraction checks the very bytes it extracts."""

    def __init__(self, f, path: Path):
        self.f, self.path, self.md5 = f, path, hashlib.md5()

    def read(self, size: int = -1) -> bytes:
        with naming(self.path):
            data = self.f.read(size)
        self.md5.update(data)
        return data

    def md5_to_end(self) -> str:
        """The md5 of the whole file: what extraction left unread (gzip trailer, padding) is read too."""
        while self.read(CHUNK):
            pass
        return self.md5.hexdigest()


def extract_checked(archive: Path, expected_md5: str, target: Path, stop: threading.Event | None = None) -> None:
    """Extract the archive into target, reading it to its end through md5, every time it is extracted.

    Streaming extraction stops at the tar end-of-archive blocks, before the gzip trailer, so gzip's
    CRC is never checked: most damage to an archive would extract without an error. The md5 of every
    byte of the file is the end-to-end check instead: of the bytes on disk now, not of those that
    were downloaded (the file may have changed since, or been written twice). A mismatch is reported
    as such (ArchiveChanged), also when the damage first broke the extraction.
    """
    with naming(archive), open(archive, "rb") as f:
        reader = _HashingReader(f, archive)
        try:
            _extract_members(archive, reader, target, stop)
        except ExtractError:
            _check_md5(archive, reader.md5_to_end(), expected_md5)
            raise
        _check_md5(archive, reader.md5_to_end(), expected_md5)


def _check_md5(archive: Path, actual: str, expected: str) -> None:
    if actual != expected:
        raise ArchiveChanged(
            f"{archive}: md5 {actual}, expected {expected}: the archive is damaged or changed "
            "since it was downloaded; nothing extracted, nothing marked done: a re-run downloads it again"
        )


def _extract_members(archive: Path, reader: _HashingReader, target: Path, stop: threading.Event | None) -> None:
    """One streaming pass: check each member, then extract it (tar 'data' filter as a 2nd guard).

    An OSError while writing (a full disk) names the member's file and propagates as it is."""
    try:
        with tarfile.open(fileobj=reader, mode="r|gz") as tar:
            for member in tar:
                if stop is not None and stop.is_set():
                    raise KeyboardInterrupt  # the user's Ctrl-C, seen by this thread
                check_member(archive, member)
                with naming(target / member.name):
                    tar.extract(member, target, filter="data")
    except tarfile.FilterError as err:
        raise ExtractError(f"{archive}: refusing to extract member {err.tarinfo.name!r}: {err}") from None
    except (tarfile.TarError, EOFError, zlib.error) as err:
        what = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        raise ExtractError(f"{archive}: cannot extract: {what}") from None


def _move_into_place(archive: Path, subset: str, tmp: Path, librispeech_dir: Path) -> None:
    """Move tmp/LibriSpeech/<subset> to librispeech_dir/<subset> in one rename; keep the top-level
    *.TXT files (identical in every archive) beside it."""
    source = tmp / audio_dir(subset)  # the archive's layout is the dataset directory's
    if not source.is_dir():
        raise ExtractError(f"{archive}: holds no {audio_dir(subset)}/ directory")
    librispeech_dir.mkdir(parents=True, exist_ok=True)
    for extra in source.parent.iterdir():
        if extra.is_file():
            os.replace(extra, librispeech_dir / extra.name)
    dest = librispeech_dir / subset
    if dest.exists():  # extracted by a run killed before its marker: replace it whole
        old = tmp / "old"
        os.replace(dest, old)
    os.replace(source, dest)
