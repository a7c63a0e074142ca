"""verify_dataset.sh against one `md5sum` process over the same files, each timed as a user times it:
the whole command, a process of its own per run (start-up, imports and the pool's start included).

    python -m bench.verify_throughput                       # builds a LibriSpeech-like dataset (3 h) in a temp dir
    python -m bench.verify_throughput --data-dir DIR        # a prepared dataset directory (e.g. demo/dataset-12000-500)
    python -m bench.verify_throughput --jobs 2 --repeats 9 --json figures.json

The files are every file the dataset's checksum records list (audio, transcripts, feature shards,
manifests, features.json): those verify hashes. All are read once before timing, so every run reads
from the page cache and the figures compare CPU work, not the disk. The commands run in turn, one
round after another (md5sum, verify --jobs N, verify --jobs 1, then again), so that a machine whose
speed drifts slows both sides of a round alike; the ratio is the median over the rounds of
md5sum's time / verify's time in the same round.
  md5sum           `xargs -0 md5sum` over the files: one md5sum process at a time (the baseline)
  verify --jobs N  ./verify_dataset.sh --data-dir DIR --jobs N: the whole check (hashes, walks,
                   manifests, transcripts, shards), N hashing processes
Goal: verify --jobs N at least 0.8 x N times as fast as md5sum, N = the cores it may use
(--jobs defaults to them). A built dataset: tone + noise FLACs of 10-16 s in chapters of 20
(tests.corpus), prepared with the default 161-bin features, so its file sizes are LibriSpeech's
(FLAC ~30 kB/s, shards 32 kB/s).
"""

import argparse
import json
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
from data.verify import Report, read_records
from exit_status import Failure

REPO = Path(__file__).resolve().parents[1]
PER_CHAPTER = 20
SECONDS = (10.0, 16.0)  # LibriSpeech utterances: mostly 10-16 s
BASELINE = "md5sum (1 process)"


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


def commands(data_dir: Path, paths: list[str], jobs: int) -> dict[str, tuple[list[str], bytes | None]]:
    """{name: (command, its standard input or None)}: the baseline first."""
    verify = [str(REPO / "verify_dataset.sh"), "--data-dir", str(data_dir)]
    names = "".join(f"{path}\0" for path in paths).encode()
    runs = {
        BASELINE: (["xargs", "-0", "md5sum"], names),
        f"verify --jobs {jobs}": ([*verify, "--jobs", str(jobs)], None),
    }
    if jobs != 1:
        runs["verify --jobs 1"] = ([*verify, "--jobs", "1"], None)
    return runs


def timed_run(command: list[str], stdin: bytes | None, cwd: Path) -> dict:
    """Run the command to its end: {"wall": s, "cpu": s of it and every process it waited for}."""
    given = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    before, start = os.times(), time.perf_counter()
    done = subprocess.run(command, **given, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall, after = time.perf_counter() - start, os.times()
    if done.returncode != 0:
        raise Failure(f"{' '.join(command)} (in {cwd}) exited with status {done.returncode}: {done.stderr[-500:]!r}")
    cpu = after.children_user + after.children_system - before.children_user - before.children_system
    return {"wall": wall, "cpu": cpu}


def measure(runs: dict[str, tuple[list[str], bytes | None]], cwd: Path, repeats: int) -> dict[str, list[dict]]:
    """{name: [run, ...]}: `repeats` rounds, each running every command once, in turn."""
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (command, stdin) in runs.items():
            times[name].append(timed_run(command, stdin, cwd))
    return times


def summarise(total: int, times: dict[str, list[dict]], jobs: int) -> dict:
    """Medians of each command, and each verify's speed-up over md5sum: the median over the rounds of
    md5sum's wall time / its wall time in the same round."""
    baseline = [run["wall"] for run in times[BASELINE]]
    rows = {}
    for name, runs in times.items():
        wall = statistics.median(run["wall"] for run in runs)
        rows[name] = {
            "wall_s": wall,
            "cpu_s": statistics.median(run["cpu"] for run in runs),
            "mb_per_s": total / 1e6 / wall,
            "x_md5sum": statistics.median(b / run["wall"] for b, run in zip(baseline, runs)),
        }
    cores = min(jobs, os.cpu_count() or 1)
    return {"bytes": total, "jobs": jobs, "goal": 0.8 * cores, "rows": rows, "runs": times}


def report(summary: dict) -> str:
    lines = [f"{'command (whole process)':<24} {'median s':>9} {'CPU s':>6} {'MB/s':>6} {'x md5sum':>9}"]
    for name, row in summary["rows"].items():
        lines.append(
            f"{name:<24} {row['wall_s']:>9.3f} {row['cpu_s']:>6.2f} {row['mb_per_s']:>6.0f} {row['x_md5sum']:>9.2f}"
        )
    jobs, goal = summary["jobs"], summary["goal"]
    ratio = summary["rows"][f"verify --jobs {jobs}"]["x_md5sum"]
    verdict = "met" if ratio >= goal else "NOT met"
    lines.append(f"verify_dataset.sh --jobs {jobs} / md5sum: {ratio:.2f} (goal >= {goal:.2f}: {verdict})")
    lines.append(f"load average now: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.verify_throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, help="a prepared dataset directory (default: build one)")
    parser.add_argument("--hours", type=float, default=3.0, help="audio of a built dataset (default %(default)s)")
    parser.add_argument("--keep", type=Path, help="build the dataset here and keep it (default: a temp dir)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="verify's processes (default: cores)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of timed runs (default %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the figures (and every run's) here")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.repeats < 1 or args.hours <= 0:
        raise exit_status.UsageError("--jobs and --repeats must be at least 1, --hours above 0")
    if not all(map(shutil.which, ("md5sum", "xargs"))):
        raise exit_status.UsageError("needs md5sum and xargs (GNU coreutils, findutils) on PATH")
    return args


def main(argv: list[str] | None = None) -> int:
    return exit_status.run(lambda: run(parse_args(argv)))


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
        runs = commands(data_dir, paths, args.jobs)
        measure(runs, data_dir, 1)  # a round not counted: the interpreter's files into the page cache
        summary = summarise(total, measure(runs, data_dir, args.repeats), args.jobs)
        print(report(summary))
        if args.json:
            args.json.write_text(json.dumps(summary, indent=1) + "\n")
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
