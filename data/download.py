"""Download LibriSpeech: resumable, checksummed fetch; safe extraction; stage markers; then prepare.

Per subset: archives/<subset>.tar.gz.part is streamed (md5 computed on the fly, resumed with an HTTP
Range request after an interruption), verified against the md5 table, renamed to <subset>.tar.gz,
and marked .state/download-<subset>.done (holding the verified md5 line). It is then extracted into a
temporary directory inside the data dir (unique to the run), refusing unsafe members, while the
archive is read to its end through md5: only if every byte is the expected one is the tree moved into
LibriSpeech/<subset> at once and marked .state/extract-<subset>.done. A re-run skips every marked
stage; a killed run never leaves anything that looks complete. Finally data.prepare makes features
and manifests. The whole run holds the dataset directory's lock: a second run on it stops at once,
naming the first.

    python -m data.download --data-dir DIR --subsets dev-clean,dev-other [--jobs 4] [key=value ...]
"""

import argparse
import hashlib
import io
import os
import re
import shutil
import sys
import tarfile
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import requests
import urllib3

import exit_status
import params
from data import dataset_dir, librispeech
from data.dataset_dir import DatasetDir, DatasetError, command_line
from data.files import file_digest, naming, temp_name
from data.progress import progress_bar

CHUNK = 1 << 20
EXTRACT_FACTOR = 1.0  # extracted audio is about as large as its (barely compressible) archive
FEATURE_FACTOR = 1.8  # float16 spectrogram shards + manifests, relative to the archive
_CONTENT_RANGE = re.compile(r"bytes (?P<first>\d+)-(?P<last>\d+)/(?P<size>\d+|\*)")
_STOP = threading.Event()  # set on Ctrl-C so worker threads stop at their next chunk


class DownloadError(exit_status.Failure):
    """A download, checksum, extraction or disk-space failure; the message says which and where."""


class Interrupted(Exception):
    """The user interrupted the run; whatever is half done stays resumable."""


def _check_stop() -> None:
    if _STOP.is_set():
        raise Interrupted()


class _Retryable(Exception):
    """A failure worth another try (5xx answer, truncated body)."""


@dataclass(frozen=True)
class Config:
    data_dir: Path
    mirror: str
    md5s: dict  # archive file name -> md5
    retries: int = 5  # tries per archive before giving up
    retry_delay: float = 2.0  # s before the 2nd try; doubles after each failure
    timeout: float = 60.0  # s; connect and read timeout
    remove_archives: bool = False

    @property
    def dataset(self) -> DatasetDir:
        return DatasetDir(self.data_dir)

    def url(self, subset: str) -> str:
        return f"{self.mirror.rstrip('/')}/{librispeech.archive_name(subset)}"

    def archive(self, subset: str) -> Path:
        return self.dataset.archive(subset)

    def part(self, subset: str) -> Path:
        return self.dataset.part(subset)

    def md5_line(self, subset: str) -> str:
        name = librispeech.archive_name(subset)
        return f"{self.md5s[name]}  {name}\n"


# ---------------------------------------------------------------- checksums and markers


def load_checksums(path: str | Path) -> dict[str, str]:
    """md5sum.txt (`<md5>  <file>` per line) -> {file name: md5}. Errors name the file and line."""
    table = {}
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DownloadError(f"cannot read checksum file {path}: {err}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split(None, 1)
        digest = fields[0].lower()
        if len(fields) != 2 or len(digest) != 32 or any(c not in "0123456789abcdef" for c in digest):
            raise DownloadError(f"{path}:{number}: expected '<32 hex digit md5>  <file name>', got {line!r}")
        table[fields[1].strip().lstrip("*")] = digest
    return table


def is_done(cfg: Config, stage: str, subset: str) -> bool:
    """A stage counts as done only if its marker exists and the download marker holds today's md5."""
    if cfg.dataset.marker_text("download", subset) != cfg.md5_line(subset):
        return False
    return stage == "download" or cfg.dataset.is_marked(stage, subset)


def clear_stale_markers(cfg: Config, subset: str) -> None:
    """Forget every stage of a subset whose download marker names another md5 than expected (and
    delete its archive and .part: they hold the old content), and the download of an archive
    deleted by hand before it was extracted."""
    dataset = cfg.dataset
    if dataset.marker_text("download", subset) not in (None, cfg.md5_line(subset)):
        for stage in ("download", "extract", "prepare"):
            dataset.unmark(stage, subset)
        cfg.archive(subset).unlink(missing_ok=True)
        cfg.part(subset).unlink(missing_ok=True)
    if is_done(cfg, "download", subset) and not is_done(cfg, "extract", subset) and not cfg.archive(subset).is_file():
        dataset.unmark("download", subset)


# ---------------------------------------------------------------- fetching


def _with_retries(cfg: Config, url: str, attempt_fn):
    """Call attempt_fn() until it returns; retryable failures back off exponentially.

    attempt_fn returns (result, made_progress); a try that made progress does not count against
    the limit, so a long transfer over a flaky link still finishes.
    """
    failures = 0
    while True:
        try:
            return attempt_fn()
        except (
            _Retryable,
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            urllib3.exceptions.HTTPError,
        ) as err:
            progressed = getattr(err, "progressed", False)
            failures = 0 if progressed else failures + 1
            if failures >= cfg.retries:
                raise DownloadError(f"{url}: giving up after {cfg.retries} tries: {_describe(err)}") from None
            time.sleep(cfg.retry_delay * 2 ** max(0, failures - 1))
        except requests.RequestException as err:  # a bad URL or scheme: retrying cannot help
            raise DownloadError(f"{url}: {_describe(err)}") from None


def _describe(err: Exception) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def _check_status(url: str, response: requests.Response) -> None:
    if response.status_code >= 500:
        raise _Retryable(f"server answered {response.status_code} {response.reason}")
    if response.status_code >= 400 and response.status_code != 416:
        raise DownloadError(f"{url}: server answered {response.status_code} {response.reason}")


def remote_size(cfg: Config, subset: str) -> int | None:
    """Content-Length of the archive from a HEAD request, None if the server does not say (also
    if it answers 4xx: some servers refuse HEAD; the GET will tell whether the file is there)."""
    url = cfg.url(subset)

    def attempt():
        with requests.head(
            url, timeout=cfg.timeout, allow_redirects=True, headers={"Accept-Encoding": "identity"}
        ) as r:
            if 400 <= r.status_code < 500:
                print(
                    f"warning: {url}: server answered {r.status_code} {r.reason} to HEAD; size unknown", file=sys.stderr
                )
                return None
            _check_status(url, r)
            length = r.headers.get("Content-Length")
            return int(length) if length and length.isdigit() else None

    return _with_retries(cfg, url, attempt)


class _Transfer:
    """One archive's .part file and the md5 of the bytes in it, kept in step across tries.

    The .part has a fixed name, unlike every other temporary file: a run killed mid-download must
    find it to resume with a Range request. Two runs writing it at once would interleave their
    bytes; the dataset directory's lock, held by every run that downloads, is what prevents that.
    Even so each write goes to the offset this run's md5 covers (never appended after bytes someone
    else added), and extraction checks the md5 of the archive on disk again.
    """

    def __init__(self, cfg: Config, subset: str, position: int):
        self.cfg, self.subset, self.position = cfg, subset, position
        self.url, self.part = cfg.url(subset), cfg.part(subset)
        self.done = 0  # bytes on disk that self.md5 covers
        self.md5 = hashlib.md5()
        if self.part.exists():  # resuming a previous run: hash what is already there, once
            self.done = self.part.stat().st_size
            self.md5 = file_digest(self.part, "md5", limit=self.done)

    def restart(self) -> None:
        self.done, self.md5 = 0, hashlib.md5()
        self.part.unlink(missing_ok=True)

    def attempt(self) -> str:
        """Fetch the rest of the archive; returns the md5 of the whole .part."""
        headers = {"Accept-Encoding": "identity"}
        if self.done:
            headers["Range"] = f"bytes={self.done}-"
        with requests.get(self.url, headers=headers, stream=True, timeout=self.cfg.timeout) as r:
            _check_status(self.url, r)
            if r.status_code == 416 and self._complete_per_416(r):
                return self.md5.hexdigest()
            if r.status_code == 416:
                self.restart()
                raise _Retryable("server refused the byte range of the partial file; starting over")
            self._stream(r, self._expected_total(r))
        return self.md5.hexdigest()

    def _expected_total(self, r: requests.Response) -> int | None:
        """Size of the whole archive per this answer, once it is known to continue the .part.

        A 206 must start at the byte the .part ends with; its total is Content-Range's /size. Any
        other answer (a 200: the server ignored the range) is the whole file: start from byte 0.
        """
        if r.status_code == 206:
            content_range = r.headers.get("Content-Range", "")
            match = _CONTENT_RANGE.fullmatch(content_range.strip())
            if match and int(match["first"]) == self.done:
                return int(match["size"]) if match["size"] != "*" else None
            self.restart()
            raise _Retryable(
                f"server answered bytes {content_range or '(no Content-Range)'!r}, "
                f"not from byte {self.done}; starting over from byte 0"
            )
        if self.done:
            self.restart()  # the server ignored our range and sends the whole file
        length = r.headers.get("Content-Length")
        return int(length) if length and length.isdigit() else None

    def _complete_per_416(self, r: requests.Response) -> bool:
        """Whether a 416 says the partial file already holds every byte (a run killed at the end)."""
        content_range = r.headers.get("Content-Range", "")
        return bool(self.done) and content_range == f"bytes */{self.done}"

    def _stream(self, r: requests.Response, total: int | None) -> None:
        start = self.done
        bar = progress_bar(
            total=total,
            initial=self.done,
            desc=librispeech.archive_name(self.subset),
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            position=self.position,
            leave=True,
        )
        try:
            with naming(self.part), self._open_part() as f:
                # raw stream, undecoded: a server labelling .tar.gz "Content-Encoding: gzip" must
                # not get the archive gunzipped under our md5.
                for chunk in r.raw.stream(CHUNK, decode_content=False):
                    _check_stop()
                    f.write(chunk)
                    self.md5.update(chunk)
                    self.done += len(chunk)
                    bar.update(len(chunk))
            if total is not None and self.done != total:
                raise _Retryable(f"body ended after {self.done} of {total} bytes")
        except Exception as err:
            err.progressed = self.done > start
            raise
        finally:
            bar.close()

    @contextmanager
    def _open_part(self) -> Iterator[io.BufferedWriter]:
        """The .part, open for writing at byte self.done, with anything after it cut off."""
        with open(os.open(self.part, os.O_WRONLY | os.O_CREAT, 0o666), "wb") as f:
            if os.fstat(f.fileno()).st_size != self.done:
                f.truncate(self.done)
            f.seek(self.done)
            yield f


def fetch_archive(cfg: Config, subset: str, position: int = 0) -> str:
    """Download (or resume) archives/<subset>.tar.gz.part; returns the md5 of its bytes."""
    cfg.part(subset).parent.mkdir(parents=True, exist_ok=True)
    transfer = _Transfer(cfg, subset, position)
    return _with_retries(cfg, transfer.url, transfer.attempt)


def verify(cfg: Config, subset: str, actual: str, path: Path) -> None:
    """Raise (deleting path) unless actual is the expected md5 of the subset's archive."""
    name = librispeech.archive_name(subset)
    expected = cfg.md5s[name]
    if actual != expected:
        path.unlink(missing_ok=True)
        raise DownloadError(
            f"{name}: md5 mismatch: expected {expected}, got {actual} (from {cfg.url(subset)}); "
            f"deleted the bad file {path}, not extracted; a re-run downloads it again"
        )


def download(cfg: Config, subset: str, position: int = 0) -> None:
    """Make archives/<subset>.tar.gz exist with the expected md5, and mark it so."""
    final = cfg.archive(subset)
    if final.is_file():  # archived by a run killed before its marker, or put there by hand
        actual, expected = file_digest(final, "md5").hexdigest(), cfg.md5s[librispeech.archive_name(subset)]
        if actual != expected:  # local content (e.g. of an older corpus), not the mirror's fault
            final.unlink()
            print(
                f"{final}: local archive has md5 {actual}, expected {expected}; deleted it, "
                f"downloading it again from {cfg.url(subset)}",
                file=sys.stderr,
            )
    if not final.is_file():
        verify(cfg, subset, fetch_archive(cfg, subset, position), cfg.part(subset))
        os.replace(cfg.part(subset), final)
    cfg.dataset.mark("download", subset, cfg.md5_line(subset))


# ---------------------------------------------------------------- extraction


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
        raise DownloadError(f"{archive}: refusing to extract member {member.name!r}: {reason}")


def safe_extract(cfg: Config, subset: str) -> None:
    """Extract LibriSpeech/<subset> from the archive via a temp dir, then move it into place."""
    archive = cfg.archive(subset)
    # Temporary directories of killed runs: ours to delete, as this run holds the directory's lock.
    # This run's own has a name no other run uses, in case the lock does not work (NFS without flock).
    for leftover in cfg.dataset.extraction_dirs(subset):
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = temp_name(cfg.data_dir / f"extract-{subset}")
    with naming(tmp):
        tmp.mkdir()
    try:
        extract_checked(cfg, subset, tmp)
        _move_into_place(archive, subset, tmp, cfg.data_dir / "LibriSpeech")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cfg.dataset.mark("extract", subset)
    if cfg.remove_archives:
        archive.unlink()


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


def extract_checked(cfg: Config, subset: str, target: Path) -> None:
    """Extract the archive into target, reading it to its end through md5, every time it is extracted.

    Streaming extraction stops at the tar end-of-archive blocks, before the gzip trailer, so gzip's
    CRC is never checked: most damage to an archive would extract without an error. The md5 of every
    byte of the file is the end-to-end check instead: of the bytes on disk now, not of those that
    were downloaded (the file may have changed since, or been written twice). A mismatch is reported
    as such, also when the damage first broke the extraction; the download marker is then removed,
    so that a re-run downloads the archive again.
    """
    archive = cfg.archive(subset)
    expected = cfg.md5s[librispeech.archive_name(subset)]
    with naming(archive), open(archive, "rb") as f:
        reader = _HashingReader(f, archive)
        try:
            _extract_members(archive, reader, target)
        except DownloadError:
            _check_archive_md5(cfg, subset, reader.md5_to_end(), expected)
            raise
        _check_archive_md5(cfg, subset, reader.md5_to_end(), expected)


def _check_archive_md5(cfg: Config, subset: str, actual: str, expected: str) -> None:
    if actual != expected:
        cfg.dataset.unmark("download", subset)
        raise DownloadError(
            f"{cfg.archive(subset)}: md5 {actual}, expected {expected}: the archive is damaged or changed "
            "since it was downloaded; nothing extracted, nothing marked done: a re-run downloads it again"
        )


def check_tar_filters() -> None:
    """Safe extraction relies on tarfile's extraction filters (filter="data"), new in Python 3.11.4."""
    if not hasattr(tarfile, "data_filter"):
        version = ".".join(map(str, sys.version_info[:3]))
        raise DownloadError(
            f"this Python ({version}, {sys.executable}) has no tarfile extraction filters "
            "(tarfile.data_filter), needed for safe extraction: use Python >= 3.11.4"
        )


def _extract_members(archive: Path, reader: _HashingReader, target: Path) -> None:
    """One streaming pass: check each member, then extract it (tar 'data' filter as a 2nd guard).

    An OSError while writing (a full disk) names the member's file and propagates as it is."""
    try:
        with tarfile.open(fileobj=reader, mode="r|gz") as tar:
            for member in tar:
                _check_stop()
                check_member(archive, member)
                with naming(target / member.name):
                    tar.extract(member, target, filter="data")
    except tarfile.FilterError as err:
        raise DownloadError(f"{archive}: refusing to extract member {err.tarinfo.name!r}: {err}") from None
    except (tarfile.TarError, EOFError, zlib.error) as err:
        raise DownloadError(f"{archive}: cannot extract: {_describe(err)}") from None


def _move_into_place(archive: Path, subset: str, tmp: Path, librispeech_dir: Path) -> None:
    """Move tmp/LibriSpeech/<subset> to librispeech_dir/<subset> in one rename; keep the top-level
    *.TXT files (identical in every archive) beside it."""
    source = tmp / "LibriSpeech" / subset
    if not source.is_dir():
        raise DownloadError(f"{archive}: holds no LibriSpeech/{subset}/ directory")
    librispeech_dir.mkdir(parents=True, exist_ok=True)
    for extra in (tmp / "LibriSpeech").iterdir():
        if extra.is_file():
            os.replace(extra, librispeech_dir / extra.name)
    dest = librispeech_dir / subset
    if dest.exists():  # extracted by a run killed before its marker: replace it whole
        old = tmp / "old"
        os.replace(dest, old)
    os.replace(source, dest)


# ---------------------------------------------------------------- disk space


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def archive_bytes(cfg: Config, subset: str) -> int | None:
    """Size of the subset's archive: the official figure, the local file, or the server's word."""
    info = librispeech.SUBSETS[subset]
    if cfg.md5s[librispeech.archive_name(subset)] == info.md5:
        return info.bytes
    if cfg.archive(subset).is_file():
        return cfg.archive(subset).stat().st_size
    if (cfg.data_dir / "LibriSpeech" / subset).is_dir():
        return _tree_bytes(cfg.data_dir / "LibriSpeech" / subset)
    return remote_size(cfg, subset)


def bytes_needed(cfg: Config, subset: str, prepare: bool) -> int:
    """Bytes the remaining stages of a subset will add to the disk."""
    stages = {
        "download": not is_done(cfg, "download", subset),
        "extract": not is_done(cfg, "extract", subset),
        "prepare": prepare and not is_done(cfg, "prepare", subset),
    }
    if not any(stages.values()):
        return 0
    size = archive_bytes(cfg, subset)
    if size is None:
        print(f"warning: size of {cfg.url(subset)} unknown; not counted in the disk-space check", file=sys.stderr)
        return 0
    part = cfg.part(subset)
    have = part.stat().st_size if part.is_file() else 0
    return int(
        stages["download"] * max(0, size - have)
        + stages["extract"] * EXTRACT_FACTOR * size
        + stages["prepare"] * FEATURE_FACTOR * size
    )


def check_space(cfg: Config, subsets: list[str], prepare: bool) -> None:
    needed = sum(bytes_needed(cfg, s, prepare) for s in subsets)
    free = free_bytes(cfg.data_dir)
    if needed > free:
        raise DownloadError(
            f"not enough free space in {cfg.data_dir}: need {_human(needed)}, available {_human(free)}, "
            f"missing {_human(needed - free)} (free some space, pick fewer --subsets, or pass --no-space-check)"
        )


def _human(n: float) -> str:
    """Bytes in decimal units: 1.2 GB, 456.0 kB."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# ---------------------------------------------------------------- the pipeline


def fetch_and_extract(cfg: Config, subset: str, position: int = 0) -> None:
    """Every missing stage of one subset before preparation: download + md5, then extraction."""
    clear_stale_markers(cfg, subset)
    if not is_done(cfg, "download", subset):
        download(cfg, subset, position)
    if not is_done(cfg, "extract", subset):
        safe_extract(cfg, subset)
    elif cfg.remove_archives:
        cfg.archive(subset).unlink(missing_ok=True)


def fetch_all(cfg: Config, subsets: list[str], jobs: int) -> list[str]:
    """Run fetch_and_extract for every subset, `jobs` at a time; returns the error messages."""
    errors = []
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = {pool.submit(fetch_and_extract, cfg, s, i): s for i, s in enumerate(subsets)}
        for future, subset in futures.items():
            try:
                future.result()
            except DownloadError as err:
                errors.append(str(err))
            except OSError as err:  # a full disk, a permission: named by the file it was about
                errors.append(f"{subset}: {exit_status.describe_os_error(err)}")
    except KeyboardInterrupt:
        _STOP.set()  # workers raise Interrupted at their next chunk or tar member
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _STOP.clear()
    return errors


def run_prepare(data_dir: Path, subsets: list[str], p: params.Params, jobs: int) -> None:
    from data.prepare import prepare  # lazy: torch is only needed from here on

    try:
        prepare(data_dir, subsets, p, jobs)
    except DatasetError as err:
        raise DownloadError(f"preparing the features: {err}") from None


def parse_subsets(text: str) -> list[str]:
    subsets = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in subsets if s not in librispeech.SUBSETS]
    if unknown or not subsets:
        raise exit_status.UsageError(
            f"--subsets: unknown subset(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(librispeech.SUBSETS)}"
        )
    return list(dict.fromkeys(subsets))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="download_dataset.sh",
        description="Download LibriSpeech archives (resumable, md5-checked), extract them safely and "
        "prepare features and manifests. Re-running skips every completed stage.",
        epilog="Trailing key=value words override params.py (e.g. preset=demo window_size=0.01); "
        "they define the features that preparation computes. Exit status: 0 done, 1 error (network, checksum, "
        "bad data, a full disk, the directory in use by another run), 2 bad usage or parameters.",
    )
    dataset_dir.add_data_dir_argument(parser)
    parser.add_argument(
        "--subsets", default=",".join(librispeech.SUBSETS), help="comma-separated LibriSpeech subsets (default: all 7)"
    )
    parser.add_argument(
        "--mirror", default=librispeech.MIRROR, help="base URL holding <subset>.tar.gz (default: %(default)s)"
    )
    parser.add_argument("--checksums", help="md5sum.txt-format file of the archives (default: the official md5s)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="parallel downloads/extractions and preparation processes (default: %(default)s)",
    )
    parser.add_argument("--skip-prepare", action="store_true", help="stop after download and extraction")
    parser.add_argument("--remove-archives", action="store_true", help="delete each archive once extracted")
    parser.add_argument("--no-space-check", action="store_true", help="skip the free-disk-space check")
    parser.add_argument(
        "--retries", type=int, default=5, help="tries per request before giving up (default: %(default)s)"
    )
    parser.add_argument(
        "--retry-delay",
        type=float,
        default=2.0,
        help="seconds before the first retry, doubling after each (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="connect/read timeout in seconds (default: %(default)s)"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="params.py overrides for the feature definition"
    )
    return parser


def make_config(args: argparse.Namespace, subsets: list[str]) -> Config:
    md5s = load_checksums(args.checksums) if args.checksums else librispeech.official_md5s()
    missing = [librispeech.archive_name(s) for s in subsets if librispeech.archive_name(s) not in md5s]
    if missing:
        source = args.checksums or "the built-in md5 table"
        raise DownloadError(f"{source} lists no md5 for {', '.join(missing)}")
    for name, value in (("--jobs", args.jobs), ("--retries", args.retries)):
        if value < 1:
            raise exit_status.UsageError(f"{name}={value}: must be at least 1")
    if args.retry_delay < 0 or args.timeout <= 0:
        raise exit_status.UsageError("--retry-delay must be >= 0 and --timeout > 0")
    return Config(
        args.data_dir or dataset_dir.default_data_dir(),
        args.mirror,
        md5s,
        args.retries,
        args.retry_delay,
        args.timeout,
        args.remove_archives,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exit_status.run(lambda: _main(args, argv))


def _main(args: argparse.Namespace, argv: list[str] | None) -> None:
    check_tar_filters()
    p = params.parse(args.overrides)
    subsets = parse_subsets(args.subsets)
    cfg = make_config(args, subsets)
    with cfg.dataset.lock(command_line("download_dataset.sh", argv)):
        if not args.no_space_check:
            check_space(cfg, subsets, prepare=not args.skip_prepare)
        errors = fetch_all(cfg, subsets, args.jobs)
        if errors:
            raise DownloadError(
                "\n".join(errors) if len(errors) == 1 else f"{len(errors)} subsets failed:\n  " + "\n  ".join(errors)
            )
        if not args.skip_prepare:
            run_prepare(cfg.data_dir, subsets, p, args.jobs)


if __name__ == "__main__":
    sys.exit(main())
