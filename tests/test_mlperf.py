"""MLPerf logging: the events a run logs, and the compliance rules of pytorch/ds2_rules.yaml."""

import json

import pytest

import params
from pytorch import mlperf


def write_log(results_dir, status="success", wers=(40.0, 20.0), drop=(), target=23.0):
    """A log in the order the trainer writes it, minus the keys in `drop`."""
    p = params.make({"target_wer": target})
    log = mlperf.MLPerfLog(results_dir)
    skip = set(drop)

    def emit(kind, key, value=None, metadata=None):
        if key not in skip:
            getattr(log, kind)(key, value, metadata)

    emit("event", "cache_clear", True)
    emit("start", "init_start")
    if "hyperparameters" not in skip:
        log.hyperparameters(p, train_samples=24, eval_samples=4)
    emit("end", "init_stop")
    emit("start", "run_start")
    for epoch, wer in enumerate(wers, start=1):
        emit("start", "epoch_start", metadata={"epoch_num": epoch})
        emit("end", "epoch_stop", metadata={"epoch_num": epoch})
        emit("start", "eval_start", metadata={"epoch_num": epoch})
        emit("end", "eval_stop", metadata={"epoch_num": epoch})
        emit("event", "eval_accuracy", wer, metadata={"epoch_num": epoch})
    emit("end", "run_stop", metadata={"status": status})
    log.close()
    return results_dir / mlperf.LOG_NAME


def check(tmp_path, log_path):
    return mlperf.check_log(log_path, tmp_path / "checker.log")


def test_log_lines_go_to_stdout_and_the_results_file(tmp_path, capsys):
    path = write_log(tmp_path)
    lines = path.read_text().splitlines()
    assert lines and all(line.startswith(":::MLLOG ") for line in lines)
    assert capsys.readouterr().out.splitlines() == lines
    events = [json.loads(line[len(":::MLLOG ") :]) for line in lines]
    keys = [e["key"] for e in events]
    assert keys.index("init_stop") < keys.index("run_start") < keys.index("epoch_start")
    assert {e["key"]: e["value"] for e in events}["submission_benchmark"] == "speech_recognition"


def test_a_disabled_logger_writes_nothing(tmp_path, capsys):
    log = mlperf.MLPerfLog(tmp_path, enabled=False)
    log.event("cache_clear", True)
    log.close()
    assert not (tmp_path / mlperf.LOG_NAME).exists() and capsys.readouterr().out == ""


def test_a_complete_log_passes(tmp_path):
    ok, output = check(tmp_path, write_log(tmp_path))
    assert ok, output


@pytest.mark.parametrize(
    "case",
    [
        dict(drop=["run_stop"]),
        dict(drop=["run_start"]),
        dict(drop=["eval_accuracy"]),
        dict(drop=["hyperparameters"]),
        dict(status="success", wers=(40.0, 30.0)),  # claims success above the target
        dict(status="aborted", wers=(40.0, 20.0)),  # claims failure below it
        dict(status="finished"),
    ],
)
def test_a_broken_log_fails(tmp_path, case):
    ok, output = check(tmp_path, write_log(tmp_path, **case))
    assert not ok, output
    assert "FAILED" in output
