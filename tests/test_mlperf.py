"""MLPerf logging: the events a run logs, and the compliance rules generated from params.py
(pytorch/ds2_rules.yaml for the benchmark, pytorch/ds2_log_rules.yaml for the log's form)."""

import json

import pytest

import params
from pytorch import mlperf


def write_log(results_dir, status="success", wers=(40.0, 20.0), drop=(), overrides=None, samples=None, evals=None):
    """A log in the order the trainer writes it, minus the keys in `drop`; `evals`: the epochs evaluated
    (default all)."""
    p = params.make(overrides or {})
    train_samples, eval_samples = samples or (mlperf.TRAIN_UTTERANCES, mlperf.VALIDATION_UTTERANCES)
    log = mlperf.MLPerfLog(results_dir)
    skip = set(drop)

    def emit(kind, key, value=None, metadata=None):
        if key not in skip:
            getattr(log, kind)(key, value, metadata)

    emit("event", "cache_clear", True)
    emit("start", "init_start")
    if "hyperparameters" not in skip:
        log.hyperparameters(p, train_samples, eval_samples, p.accumulation_steps(8))
    emit("end", "init_stop")
    emit("start", "run_start")
    for epoch, wer in enumerate(wers, start=1):
        emit("start", "epoch_start", metadata={"epoch_num": epoch})
        emit("end", "epoch_stop", metadata={"epoch_num": epoch})
        if evals is None or epoch in evals:
            emit("start", "eval_start", metadata={"epoch_num": epoch})
            emit("end", "eval_stop", metadata={"epoch_num": epoch})
            emit("event", "eval_accuracy", wer, metadata={"epoch_num": epoch})
    emit("end", "run_stop", metadata={"status": status})
    log.close()
    return results_dir / mlperf.LOG_NAME


def check(tmp_path, log_path, rules=mlperf.RULES):
    return mlperf.check_log(log_path, tmp_path / "checker.log", rules)


def logged(path) -> dict:
    events = [json.loads(line[len(":::MLLOG ") :]) for line in path.read_text().splitlines()]
    return {e["key"]: e["value"] for e in events}


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


def test_the_rules_files_are_generated_from_params(tmp_path):
    for benchmark, path in ((True, mlperf.RULES), (False, mlperf.LOG_RULES)):
        assert path.read_text() == mlperf.rules_text(benchmark), (
            f"{path.name} is stale: python -m pytorch.mlperf --write-rules"
        )


def test_every_knob_is_logged_once_with_the_accumulation_really_used(tmp_path):
    values = logged(write_log(tmp_path))
    p = params.make()
    for name in mlperf.LOGGED_KNOBS:
        expected = p.accumulation_steps(8) if name == "gradient_accumulation_steps" else getattr(p, name)
        assert values[mlperf.log_key(name)] == expected, name
    assert values["gradient_accumulation_steps"] == 1 and p.gradient_accumulation_steps == 0  # 256 = 8 x 32


def test_a_complete_log_of_the_benchmark_passes(tmp_path):
    ok, output = check(tmp_path, write_log(tmp_path))
    assert ok, output


@pytest.mark.parametrize(
    "tuned",
    [
        dict(batch_size=1024, lr=2e-3),
        dict(batch_size=64, lr=5e-4, optimizer="sgd", lr_schedule="anneal", precision="fp16", micro_batch_size=16),
        dict(gradient_accumulation_steps=4, warmup_fraction=0.05, spec_augment=True, max_duration=0.0),
    ],
)
def test_tuned_hyperparameters_pass_the_benchmark_rules(tmp_path, tuned):
    ok, output = check(tmp_path, write_log(tmp_path, overrides=tuned))
    assert ok, output


@pytest.mark.parametrize(
    "fixed",
    [
        dict(hidden_size=1024),
        dict(bidirectional=False),
        dict(window="hann"),
        dict(target_wer=30.0),
        dict(epochs=12),
        dict(val_manifest="test"),
        dict(preset="demo"),
        dict(max_duration=16.7),  # every training utterance is examined every epoch
    ],
)
def test_a_changed_fixed_hyperparameter_fails_the_benchmark_but_not_the_log_rules(tmp_path, fixed):
    path = write_log(tmp_path, overrides=fixed, wers=(40.0, 20.0 if fixed.get("target_wer") != 30.0 else 25.0))
    ok, output = check(tmp_path, path)
    assert not ok and "FAILED" in output, output
    ok, output = check(tmp_path, path, mlperf.LOG_RULES)
    assert ok, output


@pytest.mark.parametrize(
    "case",
    [
        dict(samples=(281_241, 2_703)),  # dev-clean only: not the benchmark's validation set
        dict(samples=(281_242, 5_567)),  # more training utterances than LibriSpeech has
        dict(samples=(276_969, 5_567)),  # a shrunk training set: the long utterances left out
        dict(samples=(1_000, 5_567)),
    ],
)
def test_another_dataset_fails_the_benchmark_rules(tmp_path, case):
    ok, output = check(tmp_path, write_log(tmp_path, **case))
    assert not ok, output


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
        dict(wers=(40.0, 30.0, 20.0), evals=(1, 3)),  # epoch 2 never evaluated
        dict(wers=(40.0, 30.0, 20.0), overrides=dict(epochs=2)),  # past the epoch cap
        dict(status="aborted", wers=(40.0, 30.0), overrides=dict(epochs=3)),  # gave up before the cap
    ],
)
@pytest.mark.parametrize("rules", [mlperf.RULES, mlperf.LOG_RULES], ids=["benchmark", "log"])
def test_a_broken_log_fails(tmp_path, case, rules):
    ok, output = check(tmp_path, write_log(tmp_path, **case), rules)
    assert not ok, output
    assert "FAILED" in output
