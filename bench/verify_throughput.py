"""verify_dataset.sh's throughput against a single-process `md5sum` of the same files.

    python -m bench.verify_throughput                       # builds a LibriSpeech-like dataset (3 h) in a temp dir
    python -m bench.verify_throughput --data-dir DIR        # a prepared dataset directory
    python -m bench.verify_throughput --hours 6 --jobs 4 --repeats 5

The files are every file the dataset's checksum records list (audio, transcripts, feature shards,
manifests, features.json): those verify hashes. All are read once before timing, so both sides read
from the page cache and the figures compare CPU work, not the disk. Timed, best of --repeats:
  md5sum        `xargs -0 md5sum` over the files: one md5sum process at a time (the baseline)
  sha256sum     the same with sha256sum: verify's hash in C, one process (for scale: where the CPU
                has SHA extensions sha256 is faster than md5)
  verify        data.verify.verify(data_dir, jobs): the whole check (hashes, walks, manifests,
                transcripts, shards), with --jobs hashing processes and with one
Goal: verify --jobs N at least 0.8 x N times md5sum's MB/s, N = the cores (--jobs defaults to them).
A built dataset: tone + noise FLACs of 10-16 s in chapters of 20 (tests.corpus), prepared with
the default 161-bin features, so its file sizes are LibriSpeech's (FLAC ~30 kB/s, shards 32 kB/s).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import exit_status
import params
from data.dataset_dir import DatasetDir
from data.prepare import prepare
from data.verify import Report, hash_all, read_records, verify
from exit_status import Failure

PER_CHAPTER = 20
SECONDS = (10.0, 16.0)  # LibriSpeech utterances: mostly 10-16 s


def build_dataset(root: Path, hours: float, jobs: int) -> Path:
    """A prepared LibriSpeech-format dataset of about `hours` of audio under root."""
    from tests.corpus import write_tree  # the test corpus helper: deterministic, no espeak-ng needed

    chapters = max(1, round(hours * 3600 / (PER_CHAPTER * sum(SECONDS) / 2)))
    print(f"building {chapters} chapters x {PER_CHAPTER} utterances of {SECONDS[0]:g}-{SECONDS[1]:g} s in {root}")
    write_tree(root, {"train-clean-100": (chapters, PER_CHAPTER)}, seed=0, seconds=SECONDS)
    prepare(root, None, params.make(), jobs=jobs)
    return root


def listed_files(data_dir: Path) -> list[str]:
    """The relative paths verify hashes: every file of every checksum record."""
    report = Report()
    records = read_records(DatasetDir(data_dir), report)
    if report.problems or not records:
        raise Failure(f"{data_dir}: no readable checksum records ({'; '.join(report.problems) or 'none'})")
    return sorted({path for record in records.values() for path in record})


def warm(data_dir: Path, paths: list[str]) -> int:
    """Read every file once (into the page cache); returns their total size in bytes."""
    total = 0
    for path in paths:
        with open(data_dir / path, "rb") as f:
            while chunk := f.read(1 << 20):
                total += len(chunk)
    return total


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (md5sum, the pool's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(fn, repeats: int) -> list[tuple[float, float]]:
    """(wall s, CPU s) of each of `repeats` calls of fn."""
    times = []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), cpu_seconds()
        fn()
        times.append((time.perf_counter() - start, cpu_seconds() - cpu))
    return times


def coreutils(tool: str, data_dir: Path, paths: list[str]) -> None:
    """`tool` (md5sum, sha256sum) over the files, one process at a time."""
    names = "".join(f"{path}\0" for path in paths).encode()
    subprocess.run(["xargs", "-0", tool], input=names, cwd=data_dir, stdout=subprocess.DEVNULL, check=True)


def run_verify(data_dir: Path, jobs: int) -> None:
    report = verify(data_dir, jobs)
    if not report.passed:
        raise Failure(f"{data_dir} does not verify: {report.problems[:5]}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.verify_throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, help="a prepared dataset directory (default: build one)")
    parser.add_argument("--hours", type=float, default=3.0, help="audio of a built dataset (default %(default)s)")
    parser.add_argument("--keep", type=Path, help="build the dataset here and keep it (default: a temp dir)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="verify's processes (default: cores)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (default %(default)s)")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.repeats < 1 or args.hours <= 0:
        parser.error("--jobs and --repeats must be at least 1, --hours above 0")
    if not all(map(shutil.which, ("md5sum", "sha256sum", "xargs"))):
        parser.error("needs md5sum, sha256sum and xargs (GNU coreutils, findutils) on PATH")
    return args


def report(total: int, rows: list[tuple[str, list[tuple[float, float]]]], jobs: int) -> None:
    """Best wall time (MB/s, x md5sum), median wall time, and the CPU seconds of the best run
    (MB per CPU-s: what each byte costs, whatever else the machine runs)."""
    best = {name: min(times) for name, times in rows}
    baseline = total / best[rows[0][0]][0]
    print(f"{'method':<24} {'best s':>7} {'median s':>9} {'MB/s':>6} {'x md5sum':>9} {'CPU s':>6} {'MB/CPU-s':>9}")
    for name, times in rows:
        wall, cpu = best[name]
        median = statistics.median(t[0] for t in times)
        rate = total / wall
        line = f"{name:<24} {wall:>7.3f} {median:>9.3f} {rate / 1e6:>6.0f} {rate / baseline:>9.2f} {cpu:>6.2f}"
        print(f"{line} {total / 1e6 / max(cpu, 1e-9):>9.0f}")
    ratio = total / best[rows[-1][0]][0] / baseline
    cores = min(jobs, os.cpu_count() or 1)
    verdict = "met" if ratio >= 0.8 * cores else "NOT met"
    print(f"verify --jobs {jobs} / md5sum: {ratio:.2f} (goal >= 0.8 x {cores} = {0.8 * cores:.2f}: {verdict})")
    print(f"load average now: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return exit_status.run(lambda: run(args))


def run(args: argparse.Namespace) -> None:
    temp = None
    if args.data_dir is None:
        temp = None if args.keep else tempfile.mkdtemp(prefix="verify-throughput-")
        data_dir = build_dataset(args.keep or Path(temp) / "ds", args.hours, args.jobs)
    else:
        data_dir = args.data_dir
    try:
        paths = listed_files(data_dir)
        total = warm(data_dir, paths)
        print(
            f"{data_dir}: {len(paths):,} files, {total / 1e6:,.0f} MB (average {total / len(paths) / 1e3:,.0f} kB), "
            f"{os.cpu_count()} cores"
        )
        run_verify(data_dir, args.jobs)  # warm-up: imports, the pool's first start
        rows = [
            (f"{tool} (1 process)", timed(lambda t=tool: coreutils(t, data_dir, paths), args.repeats))
            for tool in ("md5sum", "sha256sum")
        ]
        rows.append(("verify --jobs 1", timed(lambda: run_verify(data_dir, 1), args.repeats)))
        rows.append(
            (f"hashing only --jobs {args.jobs}", timed(lambda: hash_all(data_dir, paths, args.jobs), args.repeats))
        )
        rows.append((f"verify --jobs {args.jobs}", timed(lambda: run_verify(data_dir, args.jobs), args.repeats)))
        report(total, rows, args.jobs)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
