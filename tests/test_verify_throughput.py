"""bench.verify_throughput on a tiny dataset it builds itself: whole-command figures and their ratio."""

import json
import os
import re
import statistics

import pytest

from bench import verify_throughput


def test_times_both_whole_commands_and_computes_the_ratio_from_their_rounds(tmp_path, capsys):
    out = tmp_path / "figures.json"
    argv = ["--hours", "0.05", "--repeats", "2", "--jobs", "2", "--json", str(out)]
    assert verify_throughput.main(argv) == 0
    summary = json.loads(out.read_text())
    runs, rows = summary["runs"], summary["rows"]
    assert set(runs) == {"md5sum (1 process)", "verify --jobs 2", "verify --jobs 1"}
    for name, timed in runs.items():
        assert len(timed) == 2 and all(run["wall"] > 0 and run["cpu"] > 0 for run in timed), name
        assert rows[name]["wall_s"] == statistics.median(run["wall"] for run in timed)
        assert rows[name]["mb_per_s"] == pytest.approx(summary["bytes"] / 1e6 / rows[name]["wall_s"])
    baseline = [run["wall"] for run in runs["md5sum (1 process)"]]
    ratio = statistics.median(b / run["wall"] for b, run in zip(baseline, runs["verify --jobs 2"]))
    assert rows["verify --jobs 2"]["x_md5sum"] == pytest.approx(ratio)
    assert rows["md5sum (1 process)"]["x_md5sum"] == pytest.approx(1.0)
    assert summary["bytes"] > 100_000 and summary["goal"] == pytest.approx(0.8 * min(2, os.cpu_count()))
    verdict = r"verify_dataset.sh --jobs 2 / md5sum: ([0-9.]+) \(goal >= ([0-9.]+): (met|NOT met)\)"
    printed = re.search(verdict, capsys.readouterr().out)
    assert printed and float(printed[1]) == pytest.approx(ratio, abs=0.005)
    assert (printed[3] == "met") == (ratio >= summary["goal"])


def test_a_dataset_that_does_not_verify_is_named(tmp_path, capsys):
    data = tmp_path / "ds"
    assert verify_throughput.main(["--hours", "0.02", "--repeats", "1", "--jobs", "1", "--keep", str(data)]) == 0
    capsys.readouterr()
    (data / "manifests" / "train.jsonl").write_text("not a manifest\n")
    assert verify_throughput.main(["--data-dir", str(data), "--repeats", "1", "--jobs", "1"]) == 1
    assert "verify_dataset.sh --data-dir " + str(data) in capsys.readouterr().err


def test_bad_counts_are_usage_errors(capsys):
    assert verify_throughput.main(["--repeats", "0"]) == 2
    assert "must be at least 1" in capsys.readouterr().err
