"""Several timed runs -> one MLPerf-style result: each run's log checked, then the summary across runs.

    python -m pytorch.summarize RESULTS_DIR [RESULTS_DIR ...] [--rules benchmark|log] [--json FILE]

A time-to-train result is a set of runs with different seeds, not one run. For each results directory
this checks mlperf_log.txt with the compliance checker (the benchmark's rules by default) and reads
the time to train from the log itself (run_stop - run_start, MLPerf's definition), the epochs and the
status. A run counts as converged when it reached the target AND its log passed. The summary gives the
mean over converged runs and, as MLPerf scores a benchmark, the olympic mean: drop the fastest and the
slowest run, average the rest, with a run that did not converge counted as the slowest (so at most
one may fail).

A result of the benchmark is RUNS_PER_RESULT["benchmark"] = 10 runs with distinct seeds, as MLPerf's
speech benchmark (RNN-T) asks: time to train to a WER target varies from seed to seed by far more than
the hardware's noise (the epoch the target falls in moves), and the olympic mean of 10 keeps one lucky
or unlucky seed at either end from moving the score. Scaled-down runs (--rules log) need 3. Fewer
runs, or a seed given twice, is a usage error (exit 2) before any log is read.

Exit status: 0 every run converged, 3 some run did not (missed the target or failed the check),
1 a results directory cannot be read, 2 bad usage.
"""

import argparse
import json
import math
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import exit_status
from exit_status import ExitStatus, Failure, UsageError
from pytorch import mlperf

RULES = {"benchmark": mlperf.RULES, "log": mlperf.LOG_RULES}
RUNS_PER_RESULT = {"benchmark": 10, "log": 3}


class SummaryError(Failure):
    """A results directory without a readable run (exit status 1)."""


@dataclass
class Run:
    results_dir: str
    seed: int | None
    status: str  # success | aborted (run_stop's status)
    epochs: int  # epochs evaluated
    final_wer: float | None
    time_to_train_s: float | None  # run_stop - run_start in the log
    compliant: bool
    problem: str  # the checker's first complaint, '' when it passed

    @property
    def converged(self) -> bool:
        return self.status == "success" and self.compliant


def read_events(log_path: Path) -> list[dict]:
    """The :::MLLOG events of a log, in order; SummaryError naming the file if there is none."""
    try:
        events = mlperf.read_events(log_path)
    except OSError as err:
        raise SummaryError(exit_status.describe_os_error(err, log_path)) from None
    if not events:
        raise SummaryError(f"{log_path}: no MLPerf log lines (is this a results directory?)")
    return events


def first_problem(checker_output: str) -> str:
    """The first line of the checker's complaints, for the one-line table."""
    for line in checker_output.splitlines():
        if "FAILED" in line or "Required" in line or "Could not" in line:
            return line.strip()[:160]
    return "failed the compliance check"


def read_run(results_dir: Path, rules_path: Path) -> Run:
    """One results directory -> its Run: log events, compliance check."""
    log_path = Path(results_dir) / mlperf.LOG_NAME
    events = read_events(log_path)
    times = {e["key"]: e["time_ms"] for e in events if e["key"] in ("run_start", "run_stop")}
    stops = [e for e in events if e["key"] == "run_stop"]
    # by epoch: after an elastic restart an epoch is run (and evaluated) again
    accuracies = list({e["metadata"]["epoch_num"]: e["value"] for e in events if e["key"] == "eval_accuracy"}.values())
    seeds = [e["value"] for e in events if e["key"] == "seed"]
    with tempfile.TemporaryDirectory() as tmp:
        passed, output = mlperf.check_log(log_path, Path(tmp) / "checker.log", rules_path)
    timed = "run_start" in times and "run_stop" in times
    return Run(
        results_dir=str(results_dir),
        seed=seeds[0] if seeds else None,
        status=stops[-1]["metadata"].get("status", "?") if stops else "unfinished",
        epochs=len(accuracies),
        final_wer=accuracies[-1] if accuracies else None,
        time_to_train_s=(times["run_stop"] - times["run_start"]) / 1000 if timed else None,
        compliant=passed,
        problem="" if passed else first_problem(output),
    )


def olympic_mean(times: list[float]) -> float | None:
    """Mean without the fastest and the slowest run (math.inf: a run that did not converge).
    None with fewer than 3 runs, or if a non-converged run is left after dropping the slowest."""
    if len(times) < 3:
        return None
    kept = sorted(times)[1:-1]
    return None if any(math.isinf(t) for t in kept) else statistics.fmean(kept)


def summary(runs: list[Run]) -> dict:
    converged = [r.time_to_train_s for r in runs if r.converged and r.time_to_train_s is not None]
    scored = [r.time_to_train_s if r.converged and r.time_to_train_s is not None else math.inf for r in runs]
    epochs = [r.epochs for r in runs if r.converged]
    return {
        "runs": len(runs),
        "converged": len(converged),
        "mean_time_to_train_s": statistics.fmean(converged) if converged else None,
        "olympic_mean_time_to_train_s": olympic_mean(scored),
        "mean_epochs_to_target": statistics.fmean(epochs) if epochs else None,
    }


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def report(runs: list[Run], totals: dict, rules_name: str) -> str:
    lines = [f"{'run':40s} {'seed':>5s} {'status':>8s} {'epochs':>6s} {'WER':>6s} {'time (s)':>9s}  log ({rules_name})"]
    for r in runs:
        wer = "-" if r.final_wer is None else f"{r.final_wer:.2f}"
        check = "passed" if r.compliant else f"FAILED: {r.problem}"
        seed = "-" if r.seed is None else str(r.seed)
        lines.append(
            f"{r.results_dir[-40:]:40s} {seed:>5s} {r.status:>8s} {r.epochs:6d} {wer:>6s} "
            f"{_seconds(r.time_to_train_s):>9s}  {check}"
        )
    olympic = totals["olympic_mean_time_to_train_s"]
    why = "" if olympic is not None else " (needs 3+ runs with at most one not converged)"
    epochs = totals["mean_epochs_to_target"]
    lines += [
        f"converged: {totals['converged']} of {totals['runs']} runs (target reached and log passed)",
        f"mean time to train (converged runs): {_seconds(totals['mean_time_to_train_s'])} s; "
        f"mean epochs to target: {'-' if epochs is None else f'{epochs:.2f}'}",
        f"olympic mean (fastest and slowest dropped): {_seconds(olympic)} s{why}",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pytorch.summarize",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("results_dirs", nargs="+", type=Path, metavar="RESULTS_DIR", help="one per run")
    parser.add_argument(
        "--rules",
        choices=sorted(RULES),
        default="benchmark",
        help="benchmark: a valid run of this benchmark (default); log: the log's form only (scaled-down runs)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the runs and the summary as JSON")
    return parser.parse_args(argv)


def check_run_count(count: int, rules: str) -> None:
    needed = RUNS_PER_RESULT[rules]
    if count < needed:
        raise UsageError(
            f"{count} results director{'y' if count == 1 else 'ies'}: a result under --rules {rules} is {needed} runs "
            f"with distinct seeds" + (" (--rules log summarises scaled-down runs, 3 or more)" * (rules == "benchmark"))
        )


def check_seeds(runs: list[Run]) -> None:
    seen = {}
    for run in runs:
        if run.seed is not None and run.seed in seen:
            raise UsageError(
                f"{seen[run.seed]} and {run.results_dir}: both ran seed={run.seed}; a result's seeds differ"
            )
        seen[run.seed] = run.results_dir


def summarize(args: argparse.Namespace) -> ExitStatus:
    check_run_count(len(args.results_dirs), args.rules)
    runs = [read_run(d, RULES[args.rules]) for d in args.results_dirs]
    check_seeds(runs)
    totals = summary(runs)
    print(report(runs, totals, args.rules))
    if args.json:
        text = json.dumps({"rules": args.rules, "runs": [asdict(r) for r in runs], "summary": totals}, indent=2)
        args.json.write_text(text + "\n")  # an OSError names the file (exit_status.run)
    return ExitStatus.OK if totals["converged"] == len(runs) else ExitStatus.TARGET_MISSED


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return exit_status.run(lambda: summarize(args))


if __name__ == "__main__":
    sys.exit(main())
