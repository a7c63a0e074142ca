"""pytorch.summarize over real (tiny) runs: per-run compliance, time to train from the log, the summary."""

import json
import math

import pytest

from exit_status import ExitStatus
from pytorch import summarize, train
from tests import trainer_fixtures

LEARNS = ["preset=tiny", "optimizer=adamw", "lr=1e-2", "target_wer=99"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three runs that reach their (easy) target with seeds 1-3, and one that cannot (target 0)."""
    root = tmp_path_factory.mktemp("runs")
    data_dir = trainer_fixtures.write_dataset(root / "data")
    dirs = {}
    for name, overrides in {
        "seed1": [*LEARNS, "seed=1"],
        "seed2": [*LEARNS, "seed=2"],
        "seed3": [*LEARNS, "seed=3"],
        "missed": ["preset=tiny", "target_wer=0", "epochs=1", "seed=4"],
    }.items():
        dirs[name] = root / name
        # On the CPU: which runs reach the target must not depend on CUDA's non-deterministic CTC backward.
        args = ["--data-dir", str(data_dir), "--results-dir", str(dirs[name]), "--device", "cpu", *overrides]
        status = train.main(args)
        assert status == (ExitStatus.TARGET_MISSED if name == "missed" else ExitStatus.OK)
    return dirs


def log_seconds(results_dir) -> float:
    events = [json.loads(line[9:]) for line in (results_dir / "mlperf_log.txt").read_text().splitlines()]
    times = {e["key"]: e["time_ms"] for e in events}
    return (times["run_stop"] - times["run_start"]) / 1000


def test_three_converged_runs_give_their_mean_and_olympic_mean(runs, tmp_path, capsys):
    dirs = [runs[f"seed{i}"] for i in (1, 2, 3)]
    status = summarize.main([*map(str, dirs), "--rules", "log", "--json", str(tmp_path / "s.json")])
    assert status == ExitStatus.OK
    result = json.loads((tmp_path / "s.json").read_text())
    seconds = [log_seconds(d) for d in dirs]
    assert [r["time_to_train_s"] for r in result["runs"]] == pytest.approx(seconds)
    assert [r["seed"] for r in result["runs"]] == [1, 2, 3]
    assert all(r["compliant"] and r["status"] == "success" for r in result["runs"])
    assert result["summary"]["converged"] == 3
    assert result["summary"]["mean_time_to_train_s"] == pytest.approx(sum(seconds) / 3)
    assert result["summary"]["olympic_mean_time_to_train_s"] == pytest.approx(sorted(seconds)[1])
    out = capsys.readouterr().out
    assert "converged: 3 of 3 runs" in out and "olympic mean" in out


def test_a_run_that_missed_counts_as_the_slowest(runs, tmp_path):
    dirs = [runs[k] for k in ("seed1", "seed2", "seed3", "missed")]
    status = summarize.main([*map(str, dirs), "--rules", "log", "--json", str(tmp_path / "s.json")])
    assert status == ExitStatus.TARGET_MISSED
    result = json.loads((tmp_path / "s.json").read_text())
    seconds = sorted(log_seconds(runs[f"seed{i}"]) for i in (1, 2, 3))
    assert result["runs"][3]["status"] == "aborted" and result["runs"][3]["compliant"]
    assert result["summary"]["converged"] == 3
    assert result["summary"]["olympic_mean_time_to_train_s"] == pytest.approx((seconds[1] + seconds[2]) / 2)


def test_scaled_down_runs_fail_the_benchmark_rules(runs):
    run = summarize.read_run(runs["seed1"], summarize.RULES["benchmark"])
    assert not run.compliant and not run.converged and run.status == "success"


def test_a_result_needs_its_number_of_runs_with_distinct_seeds(runs, capsys):
    three = [str(runs[f"seed{i}"]) for i in (1, 2, 3)]
    assert summarize.main(three) == ExitStatus.USAGE  # the benchmark's rules: 10 runs
    assert "a result under --rules benchmark is 10 runs with distinct seeds" in capsys.readouterr().err
    assert summarize.main(three[:2] + ["--rules", "log"]) == ExitStatus.USAGE
    assert summarize.main([three[0], three[0], three[1], "--rules", "log"]) == ExitStatus.USAGE
    assert "both ran seed=1" in capsys.readouterr().err


def test_olympic_mean_needs_three_runs_and_at_most_one_failure():
    assert summarize.olympic_mean([3.0, 1.0, 2.0, 10.0]) == 2.5
    assert summarize.olympic_mean([1.0, 2.0]) is None
    assert summarize.olympic_mean([1.0, 2.0, 3.0, math.inf]) == 2.5
    assert summarize.olympic_mean([1.0, 2.0, math.inf, math.inf]) is None


def test_a_directory_without_a_run_is_named(runs, tmp_path, capsys):
    dirs = [str(runs["seed1"]), str(runs["seed2"]), str(tmp_path / "nothing")]
    assert summarize.main([*dirs, "--rules", "log"]) == ExitStatus.ERROR
    assert str(tmp_path / "nothing") in capsys.readouterr().err
