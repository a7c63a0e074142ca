"""run_and_time.sh: argument handling, the timing lines, and an end-to-end tiny run whose MLPerf log
passes the compliance checker."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

from exit_status import ExitStatus
from pytorch import mlperf, precision, preflight, run_and_time
from tests import trainer_fixtures

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "run_and_time.sh"


def run_script(*args, cwd=None, env=None):
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def test_help():
    done = run_script("--help")
    assert done.returncode == 0 and "Usage: ./run_and_time.sh" in done.stdout and "NPROC" in done.stdout


def test_bad_arguments_exit_2_before_timing(tmp_path):
    for args, message in [
        (["lr=-1"], "lr=-1.0"),
        (["--bogus"], "unknown argument '--bogus'"),
        (["--data-dir"], "--data-dir: expected one argument"),
    ]:
        done = run_script(*args, "--results-dir", str(tmp_path / "r")) if args != ["--data-dir"] else run_script(*args)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert "STARTING TIMING RUN" not in done.stdout
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "env, message",
    [
        ({"NPROC": "2x"}, "NPROC='2x': must be a whole number >= 1"),
        ({"NPROC": "0"}, "NPROC='0': must be a whole number >= 1"),
        ({"NNODES": "2"}, "NNODES > 1 needs MASTER_ADDR"),
        ({"MAX_RESTARTS": "-1"}, "MAX_RESTARTS='-1': must be a whole number >= 0"),
        ({"NNODES": "2", "NODE_RANK": "2", "MASTER_ADDR": "node0"}, "NODE_RANK=2: must be below NNODES=2"),
    ],
)
def test_bad_launch_environment_exits_2_before_timing(tmp_path, monkeypatch, capsys, env, message):
    trainer_fixtures.write_dataset(tmp_path / "tiny")
    for name in ("NPROC", "NNODES", "NODE_RANK", "MASTER_ADDR", "MAX_RESTARTS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = ["--data-dir", str(tmp_path / "tiny"), "--results-dir", str(tmp_path / "r"), "preset=tiny"]
    assert run_and_time.main(args) == ExitStatus.USAGE
    out, err = capsys.readouterr()
    assert message in err and "STARTING TIMING RUN" not in out and "RESULT" not in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is valid where there is CUDA")
def test_fp16_without_cuda_exits_2_before_the_timing_starts(tmp_path):
    trainer_fixtures.write_dataset(tmp_path / "tiny")
    done = run_script("--data-dir", str(tmp_path / "tiny"), "--results-dir", str(tmp_path / "r"), "precision=fp16")
    assert done.returncode == 2 and "precision='fp16': needs CUDA" in done.stderr, done.stderr
    assert "STARTING TIMING RUN" not in done.stdout and not (tmp_path / "r").exists()


def test_a_gpu_run_on_the_slow_recurrent_fallback_is_refused_before_the_timing(tmp_path, monkeypatch, capsys):
    """Mocked: the probe says the bf16 GRUs ran on ATen's per-time-step loop on a CUDA device (torch
    compiled against cuDNN 9.10): refused with exit 2 before the clock, unless allowed."""
    trainer_fixtures.write_dataset(tmp_path / "tiny")
    fallback = precision.RecurrentKernel("bfloat16", "native", "cuda")
    monkeypatch.setattr(preflight, "probe_recurrent", lambda p, device: fallback)
    monkeypatch.setattr(precision, "cudnn_versions", lambda: {"compiled": (9, 10, 2), "runtime": (9, 10, 2)})
    args = ["--data-dir", str(tmp_path / "tiny"), "--results-dir", str(tmp_path / "r"), "preset=tiny", "precision=bf16"]
    assert run_and_time.main(args) == ExitStatus.USAGE
    out, err = capsys.readouterr()
    assert "not cuDNN" in err and "compiled against cuDNN 9.10.2" in err and "allow_native_rnn=true" in err
    assert "STARTING TIMING RUN" not in out and not (tmp_path / "r").exists()
    allowed = [*args, "allow_native_rnn=true", "epochs=1"]
    assert run_and_time.main(allowed) in (ExitStatus.OK, ExitStatus.TARGET_MISSED)  # it trained
    assert "STARTING TIMING RUN" in capsys.readouterr().out


def test_missing_data_is_reported_before_the_timing_starts(tmp_path, capsys):
    args = ["--data-dir", str(tmp_path / "nowhere"), "--results-dir", str(tmp_path / "r"), "preset=tiny"]
    assert run_and_time.main(args) == ExitStatus.ERROR
    out, err = capsys.readouterr()
    assert f"--data-dir {tmp_path / 'nowhere'}: no such directory" in err
    assert "STARTING TIMING RUN" not in out and "RESULT" not in out and not (tmp_path / "r").exists()


def test_dry_run_without_data_shows_the_model(tmp_path, capsys):
    assert run_and_time.main(["--dry-run", "--data-dir", str(tmp_path / "nowhere")]) == ExitStatus.OK
    out = capsys.readouterr().out
    assert "Number of parameters: 207,352,608" in out and "data not checked" in out


def test_tiny_timed_run(tmp_path):
    trainer_fixtures.write_dataset(tmp_path / "tiny")
    # Relative paths are taken from the caller's directory, not the repo's.
    done = run_script(
        "--data-dir",
        "tiny",
        "--results-dir",
        "tmp",
        "preset=tiny",
        "epochs=1",
        "target_wer=100",
        "optimizer=adamw",
        "lr=1e-2",
        "seed=7",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    start = [i for i, line in enumerate(lines) if line.startswith("STARTING TIMING RUN AT ")]
    end = [i for i, line in enumerate(lines) if line.startswith("ENDING TIMING RUN AT ")]
    result = [line for line in lines if line.startswith("RESULT,")]
    assert len(start) == len(end) == len(result) == 1 and start[0] < end[0]
    match = re.fullmatch(r"RESULT,SPEECH_RECOGNITION,7,(\d+),[^,]+,(.+)", result[0])
    assert match and match.group(2) == lines[start[0]].removeprefix("STARTING TIMING RUN AT ")
    assert json.loads((tmp_path / "tmp" / "result.json").read_text())["status"] == "success"
    ok, output = mlperf.check_log(tmp_path / "tmp" / mlperf.LOG_NAME, tmp_path / "checker.log", mlperf.LOG_RULES)
    assert ok, output


def test_aborted_run_exits_3(tmp_path):
    trainer_fixtures.write_dataset(tmp_path / "tiny")
    done = run_script(
        "--data-dir",
        str(tmp_path / "tiny"),
        "--results-dir",
        str(tmp_path / "r"),
        "preset=tiny",
        "epochs=1",
        "target_wer=0",
    )
    assert done.returncode == 3, done.stderr[-2000:]
    assert "RESULT,SPEECH_RECOGNITION,1," in done.stdout
    assert json.loads((tmp_path / "r" / "result.json").read_text())["status"] == "aborted"


@pytest.mark.parametrize("augmentation", ["off", "on"])
def test_two_processes_equal_one_process_accumulating(tmp_path, augmentation):
    """NPROC=2 (torchrun, gloo, DistributedDataParallel) with batch_size=8 takes the same steps as one
    process with gradient_accumulation_steps=2: each rank runs one of the two micro-batches, and
    with augmentation on, each utterance gets the same draws in either (pytorch.augment).

    CPU only (CUDA_VISIBLE_DEVICES=""): exact equality needs the CPU's determinism, and a one-GPU
    machine has no cuda:1. tests/test_cuda.py runs two ranks on one GPU."""
    from pytorch import train

    data = trainer_fixtures.write_dataset(tmp_path / "tiny")
    common = ["preset=tiny", "optimizer=adamw", "lr=1e-2", "batch_size=8", "target_wer=0"]
    common += [f"{knob}={augmentation == 'on'}" for knob in ("tempo_perturb", "gain_perturb", "spec_augment")]

    def one_process(name, *words):
        args = ["--data-dir", str(data), "--results-dir", str(tmp_path / name), "--device", "cpu", *common, *words]
        return train.main([*args, "gradient_accumulation_steps=2"])

    assert one_process("one", "epochs=2") == ExitStatus.TARGET_MISSED
    env = dict(os.environ, NPROC="2", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    done = run_script("--data-dir", str(data), "--results-dir", str(tmp_path / "two"), *common, "epochs=2", env=env)
    assert done.returncode == 3, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("RESULT,SPEECH_RECOGNITION,") == 1
    mllog_lines = (tmp_path / "two" / mlperf.LOG_NAME).read_text().count(":::MLLOG")
    assert done.stdout.count(":::MLLOG") == mllog_lines  # rank 0 only

    def metrics(name):
        return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    assert len(metrics("one")) == len(metrics("two")) == 2
    for a, b in zip(metrics("one"), metrics("two")):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        for key in ("wer", "cer", "dropped_utterances", "skipped_steps"):
            assert b[key] == a[key], key
    ok, output = mlperf.check_log(tmp_path / "two" / mlperf.LOG_NAME, tmp_path / "checker.log", mlperf.LOG_RULES)
    assert ok, output

    # The 2-process checkpoint resumes in 1 process and continues exactly as the 1-process run does.
    for name in ("one", "two"):
        assert one_process(name, "epochs=3", "--resume") == ExitStatus.TARGET_MISSED
    assert len(metrics("one")) == len(metrics("two")) == 3
    assert metrics("two")[2]["train_loss"] == pytest.approx(metrics("one")[2]["train_loss"], rel=1e-4)
    assert metrics("two")[2]["wer"] == metrics("one")[2]["wer"]
