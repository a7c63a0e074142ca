"""Download LibriSpeech: the command line, the disk-space check and the stages of each subset.

Per subset: archives/<subset>.tar.gz.part is fetched (data.fetch: md5 computed on the fly, resumed
with an HTTP Range request after an interruption), checked against the md5 table, renamed to
<subset>.tar.gz, and marked .state/download-<subset>.done (holding the verified md5 line). It is then
extracted (data.extract: safe members only, the archive's md5 checked end to end) into
LibriSpeech/<subset> and marked .state/extract-<subset>.done. A re-run skips every marked stage; a
killed run never leaves anything that looks complete. Finally data.prepare makes features and
manifests. The whole run holds the dataset directory's lock: a second run on it stops at once,
naming the first.

--lm fetches LibriSpeech's language-model files (openslr resource 11) the same way: each streams to
lm/<file>.part (data.fetch: resumed, md5 while streaming), is checked against its md5, renamed to
lm/<file> and recorded in .state/lm-<file>.done (the verified md5 line); nothing is extracted (KenLM
and pytorch.lm read .arpa.gz as they are). Without --subsets, --lm fetches only the LM files.

    python -m data.download --data-dir DIR --subsets dev-clean,dev-other [--jobs 4] [key=value ...]
    python -m data.download --data-dir DIR --lm [--lm-files 3-gram.pruned.1e-7.arpa.gz,4-gram.arpa.gz | all]
"""

import argparse
import os
import shutil
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import exit_status
import params
from data import dataset_dir, librispeech
from data.dataset_dir import DatasetDir, DatasetError, command_line
from data.extract import ArchiveChanged, check_tar_filters, extract_subset
from data.fetch import RetryPolicy, fetch, remote_size
from data.files import file_digest, write_atomically

EXTRACT_FACTOR = 1.0  # extracted audio is about as large as its (barely compressible) archive
FEATURE_FACTOR = 1.8  # float16 spectrogram shards + manifests, relative to the archive


class DownloadError(exit_status.Failure):
    """A checksum, disk-space or preparation failure; the message says which and where."""


@dataclass(frozen=True)
class Config:
    data_dir: Path
    mirror: str
    md5s: dict  # archive file name -> md5
    retries: int = 5  # tries per archive before giving up
    retry_delay: float = 2.0  # s before the 2nd try; doubles after each failure
    timeout: float = 60.0  # s; connect and read timeout
    remove_archives: bool = False
    lm_mirror: str = librispeech.LM_MIRROR  # base URL of the LM files (openslr resource 11)

    @property
    def dataset(self) -> DatasetDir:
        return DatasetDir(self.data_dir)

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(self.retries, self.retry_delay, self.timeout)

    def url(self, subset: str) -> str:
        return f"{self.mirror.rstrip('/')}/{librispeech.archive_name(subset)}"

    def archive(self, subset: str) -> Path:
        return self.dataset.archive(subset)

    def part(self, subset: str) -> Path:
        return self.dataset.part(subset)

    def md5(self, subset: str) -> str:
        return self.md5s[librispeech.archive_name(subset)]

    def md5_line(self, subset: str) -> str:
        return f"{self.md5(subset)}  {librispeech.archive_name(subset)}\n"

    def lm_url(self, name: str) -> str:
        return f"{self.lm_mirror.rstrip('/')}/{name}"

    def lm_md5_line(self, name: str) -> str:
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
        for stage in dataset_dir.STAGES:
            dataset.unmark(stage, subset)
        cfg.archive(subset).unlink(missing_ok=True)
        cfg.part(subset).unlink(missing_ok=True)
    if is_done(cfg, "download", subset) and not is_done(cfg, "extract", subset) and not cfg.archive(subset).is_file():
        dataset.unmark("download", subset)


# ---------------------------------------------------------------- the stages of one subset


def check_md5(cfg: Config, subset: str, actual: str, path: Path) -> None:
    """Raise (deleting path) unless actual is the expected md5 of the subset's archive."""
    expected = cfg.md5(subset)
    if actual != expected:
        path.unlink(missing_ok=True)
        raise DownloadError(
            f"{librispeech.archive_name(subset)}: md5 mismatch: expected {expected}, got {actual} "
            f"(from {cfg.url(subset)}); deleted the bad file {path}, not extracted; a re-run downloads it again"
        )


def download(cfg: Config, subset: str, position: int = 0, stop: threading.Event | None = None) -> None:
    """Make archives/<subset>.tar.gz exist with the expected md5, and mark it so."""
    final = cfg.archive(subset)
    if final.is_file():  # archived by a run killed before its marker, or put there by hand
        actual, expected = file_digest(final, "md5").hexdigest(), cfg.md5(subset)
        if actual != expected:  # local content (e.g. of an older corpus), not the mirror's fault
            final.unlink()
            print(
                f"{final}: local archive has md5 {actual}, expected {expected}; deleted it, "
                f"downloading it again from {cfg.url(subset)}",
                file=sys.stderr,
            )
    if not final.is_file():
        label = librispeech.archive_name(subset)
        actual = fetch(cfg.url(subset), cfg.part(subset), cfg.policy, label, position, stop)
        check_md5(cfg, subset, actual, cfg.part(subset))
        os.replace(cfg.part(subset), final)
    cfg.dataset.mark("download", subset, cfg.md5_line(subset))


def extract(cfg: Config, subset: str, stop: threading.Event | None = None) -> None:
    """Extract the downloaded archive into LibriSpeech/<subset> and mark it so; an archive that is
    not the downloaded one any more loses its download marker (a re-run fetches it again)."""
    try:
        extract_subset(cfg.dataset, subset, cfg.md5(subset), stop)
    except ArchiveChanged:
        cfg.dataset.unmark("download", subset)
        raise
    cfg.dataset.mark("extract", subset)
    if cfg.remove_archives:
        cfg.archive(subset).unlink()


def fetch_and_extract(cfg: Config, subset: str, position: int = 0, stop: threading.Event | None = None) -> None:
    """Every missing stage of one subset before preparation: download + md5, then extraction."""
    clear_stale_markers(cfg, subset)
    if not is_done(cfg, "download", subset):
        download(cfg, subset, position, stop)
    if not is_done(cfg, "extract", subset):
        extract(cfg, subset, stop)
    elif cfg.remove_archives:
        cfg.archive(subset).unlink(missing_ok=True)


def fetch_all(cfg: Config, subsets: list[str], jobs: int) -> list[str]:
    """fetch_and_extract every subset, `jobs` at a time; returns the error messages."""
    return in_parallel(cfg, subsets, jobs, fetch_and_extract)


def in_parallel(cfg: Config, items: list[str], jobs: int, work) -> list[str]:
    """work(cfg, item, position, stop) for every item, `jobs` at a time; returns the error messages."""
    errors, stop = [], threading.Event()  # stop: set on Ctrl-C, seen by the workers at their next chunk
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = {pool.submit(work, cfg, item, i, stop): item for i, item in enumerate(items)}
        for future, item in futures.items():
            try:
                future.result()
            except exit_status.Failure as err:
                errors.append(str(err))
            except OSError as err:  # a full disk, a permission: named by the file it was about
                errors.append(f"{item}: {exit_status.describe_os_error(err)}")
    except KeyboardInterrupt:
        stop.set()  # workers raise KeyboardInterrupt at their next chunk or tar member
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return errors


# ---------------------------------------------------------------- the language-model files


def lm_is_done(cfg: Config, name: str) -> bool:
    """An LM file counts as downloaded when it is there and its record holds today's md5."""
    dataset = cfg.dataset
    return dataset.lm_file(name).is_file() and _read(dataset.lm_marker(name)) == cfg.lm_md5_line(name)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None


def download_lm(cfg: Config, name: str, position: int = 0, stop: threading.Event | None = None) -> None:
    """Make lm/<name> exist with the expected md5, and record it: the archives' stages, less extraction."""
    if lm_is_done(cfg, name):
        return
    dataset, expected = cfg.dataset, cfg.md5s[name]
    final, part, marker = dataset.lm_file(name), dataset.lm_part(name), dataset.lm_marker(name)
    recorded = _read(marker)
    if recorded is not None:  # a record of other content (the md5 table changed): forget it and its bytes
        marker.unlink()
        final.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
    if final.is_file():  # renamed by a run killed before its record, or put there by hand
        actual = file_digest(final, "md5").hexdigest()
        if actual != expected:
            final.unlink()
            print(
                f"{final}: local file has md5 {actual}, expected {expected}; deleted it, "
                f"downloading it again from {cfg.lm_url(name)}",
                file=sys.stderr,
            )
    if not final.is_file():
        actual = fetch(cfg.lm_url(name), part, cfg.policy, name, position, stop)
        if actual != expected:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"{name}: md5 mismatch: expected {expected}, got {actual} (from {cfg.lm_url(name)}); "
                f"deleted the bad file {part}; a re-run downloads it again"
            )
        os.replace(part, final)
    write_atomically(marker, cfg.lm_md5_line(name))


def lm_bytes_needed(cfg: Config, name: str) -> int | None:
    """Bytes an LM file's download will add (what its .part lacks), None where the server does not say."""
    if lm_is_done(cfg, name):
        return 0
    size = remote_size(cfg.lm_url(name), cfg.policy)
    if size is None:
        return None
    part = cfg.dataset.lm_part(name)
    return max(0, size - (part.stat().st_size if part.is_file() else 0))


def lm_files_asked(args: argparse.Namespace) -> list[str]:
    """The LM files to fetch: --lm-files, the default ones for --lm, none without either."""
    if args.lm_files is not None:
        return parse_lm_files(args.lm_files)
    return list(librispeech.DEFAULT_LM_FILES) if args.lm else []


def parse_lm_files(text: str) -> list[str]:
    """--lm-files: a comma-separated list of openslr 11 file names, or 'all'."""
    if text.strip() == "all":
        return list(librispeech.LM_FILES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in librispeech.LM_FILES]
    if unknown or not names:
        raise exit_status.UsageError(
            f"--lm-files: unknown file(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(librispeech.LM_FILES)}, or all"
        )
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------- disk space


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def archive_bytes(cfg: Config, subset: str) -> int | None:
    """Size of the subset's archive: the official figure, the local file, or the server's word."""
    info = librispeech.SUBSETS[subset]
    if cfg.md5(subset) == info.md5:
        return info.bytes
    if cfg.archive(subset).is_file():
        return cfg.archive(subset).stat().st_size
    if cfg.dataset.audio(subset).is_dir():
        return _tree_bytes(cfg.dataset.audio(subset))
    return remote_size(cfg.url(subset), cfg.policy)


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


def check_space(cfg: Config, subsets: list[str], prepare: bool, lm_files: list[str] = ()) -> None:
    needed = sum(bytes_needed(cfg, s, prepare) for s in subsets)
    for name in lm_files:
        size = lm_bytes_needed(cfg, name)
        if size is None:
            print(f"warning: size of {cfg.lm_url(name)} unknown; not counted in the disk-space check", file=sys.stderr)
        needed += size or 0
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


# ---------------------------------------------------------------- the command line


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
        "--subsets",
        help="comma-separated LibriSpeech subsets (default: all 7; none with --lm unless given)",
    )
    parser.add_argument(
        "--mirror", default=librispeech.MIRROR, help="base URL holding <subset>.tar.gz (default: %(default)s)"
    )
    parser.add_argument(
        "--checksums",
        help="md5sum.txt-format file of the archives and LM files (default: the built-in md5s; this file "
        "replaces them all)",
    )
    parser.add_argument(
        "--lm",
        action="store_true",
        help="also (without --subsets: only) fetch LibriSpeech's LM files into <data-dir>/lm "
        f"(default files: {', '.join(librispeech.DEFAULT_LM_FILES)})",
    )
    parser.add_argument(
        "--lm-files",
        help="comma-separated openslr 11 files to fetch, or all (implies --lm): " + ", ".join(librispeech.LM_FILES),
    )
    parser.add_argument(
        "--lm-mirror",
        default=librispeech.LM_MIRROR,
        help="base URL holding the LM files (default: %(default)s)",
    )
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


def make_config(args: argparse.Namespace, subsets: list[str], lm_files: list[str] = ()) -> Config:
    if args.checksums:
        md5s = load_checksums(args.checksums)
    else:
        md5s = librispeech.official_md5s() | librispeech.official_lm_md5s()
    missing = [librispeech.archive_name(s) for s in subsets if librispeech.archive_name(s) not in md5s]
    missing += [name for name in lm_files if name not in md5s]
    if missing:
        source = args.checksums or "the built-in md5 table"
        hint = "" if args.checksums else "; give it with --checksums FILE (md5sum.txt format)"
        raise DownloadError(f"{source} lists no md5 for {', '.join(missing)}{hint}")
    for name, value in (("--jobs", args.jobs), ("--retries", args.retries)):
        if value < 1:
            raise exit_status.UsageError(f"{name}={value}: must be at least 1")
    if args.retry_delay < 0 or args.timeout <= 0:
        raise exit_status.UsageError("--retry-delay must be >= 0 and --timeout > 0")
    return Config(
        args.data_dir,
        args.mirror,
        md5s,
        args.retries,
        args.retry_delay,
        args.timeout,
        args.remove_archives,
        args.lm_mirror,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exit_status.run(lambda: _main(args, argv))


def _main(args: argparse.Namespace, argv: list[str] | None) -> None:
    check_tar_filters()
    p = params.parse(args.overrides)
    lm_files = lm_files_asked(args)
    # --lm alone fetches only the LM files; without --lm, no --subsets means all of them.
    default_subsets = [] if lm_files else list(librispeech.SUBSETS)
    subsets = parse_subsets(args.subsets) if args.subsets is not None else default_subsets
    cfg = make_config(args, subsets, lm_files)
    with cfg.dataset.lock(command_line("download_dataset.sh", argv)):
        if not args.no_space_check:
            check_space(cfg, subsets, prepare=not args.skip_prepare, lm_files=lm_files)
        errors = fetch_all(cfg, subsets, args.jobs) + in_parallel(cfg, lm_files, args.jobs, download_lm)
        if errors:
            raise DownloadError(
                "\n".join(errors) if len(errors) == 1 else f"{len(errors)} downloads failed:\n  " + "\n  ".join(errors)
            )
        if subsets and not args.skip_prepare:
            run_prepare(cfg.data_dir, subsets, p, args.jobs)
        for name in lm_files:
            print(f"{cfg.dataset.lm_file(name)}: md5 {cfg.md5s[name]} verified")


if __name__ == "__main__":
    sys.exit(main())
