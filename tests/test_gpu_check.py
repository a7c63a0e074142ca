"""make gpu-check (scripts/gpu-check.sh -> bench/gpu_check.py) where it can be tested: without CUDA,
the script itself, the step budgets and their enforcement, and its report."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench import gpu_check


def test_gpu_check_without_cuda_says_so_and_fails(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: make gpu-check runs for real here")
    assert gpu_check.main(["--out", str(tmp_path / "report")]) == 1
    err = capsys.readouterr().err
    assert "make gpu-check needs a CUDA device" in err and "sees none" in err
    assert not (tmp_path / "report").exists()


def test_gpu_check_report_renders_every_step():
    env = {
        "date": "d",
        "host": "h",
        "python": "3.12",
        "torch": "2.11",
        "cuda": "13.0",
        "cudnn": 91300,
        "nccl": "2.27",
        "driver": "580",
        "gpus": [{"name": "H100", "memory_gib": 79.1, "capability": "9.0", "multiprocessors": 132}],
        "fp32_math_by_default": {"matmul": "none"},
    }
    sweep = {
        "config": "batch=8",
        "buckets": [{"step_s": 0.2}, {"step_s": 0.4}],
        "utt_per_s": 30.0,
        "peak_memory_bytes": 2**33,
        "efficiency": 0.1,
        "epoch_s": 7200.0,
        "ten_epochs_s": 72000.0,
    }
    steps = {
        "tests": {"status": 0, "seconds": 5, "cases": {"test_x": "passed"}},
        "sweep": {"status": 0, "seconds": 9, "results": [sweep, {"config": "batch=256", "error": "out of memory"}]},
        "train": {"status": 1, "seconds": 60, "result": {"status": "aborted"}},
    }
    text = gpu_check.markdown({"environment": env, "steps": steps})
    assert "1 x H100 (79.1 GiB, sm 9.0)" in text and "| train | 1 | 60 |" in text and "- test_x: passed" in text
    assert "| batch=8 | 0.200-0.400 | 30 | 8.0 | 10.0% | 2.00 h | 20.0 h |" in text and "out of memory" in text


REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu-check.sh"


def _run_script(*args, cwd, python=sys.executable) -> subprocess.CompletedProcess:
    env = dict(os.environ, DS2_PYTHON=str(python))
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_script_without_cuda_says_so_from_any_directory(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: make gpu-check runs for real here")
    # from another directory: the script must not depend on the caller's working directory
    done = _run_script("--out", "report", cwd=tmp_path)
    assert done.returncode == 1, done
    assert "make gpu-check needs a CUDA device" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "report").exists()


def test_the_script_says_what_to_do_when_the_project_cannot_be_imported(tmp_path):
    broken = tmp_path / "python"  # stands for a python without the project (and without pip)
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    done = _run_script(cwd=tmp_path, python=broken)
    assert done.returncode == 1 and "scripts/install_wheelhouse.sh" in done.stderr, done


def test_the_script_help():
    done = _run_script("--help", cwd=REPO)
    assert done.returncode == 0 and "--skip" in done.stdout and "tests, sweep, train" in done.stdout


def test_the_step_budgets_fit_ten_minutes_with_room_for_start_up_and_report():
    assert gpu_check.TOTAL_BUDGET_S == 600  # the 10 minutes
    assert sum(gpu_check.BUDGET.values()) <= gpu_check.TOTAL_BUDGET_S - 30  # room for the report
    assert set(gpu_check.BUDGET) == set(gpu_check.STEPS)


def test_a_step_past_its_budget_is_stopped_with_all_its_processes(tmp_path, monkeypatch):
    monkeypatch.setitem(gpu_check.BUDGET, "tests", 1)
    pid_file = tmp_path / "child.pid"
    command = ["bash", "-c", f"sleep 60 & echo $! > {pid_file}; wait"]
    result = gpu_check.run_step("tests", command, tmp_path)
    assert result["status"] == "timeout" and result["seconds"] < 30
    # the step's own child is gone too, not left running into the next step (signals take a moment)
    child, deadline = int(pid_file.read_text()), time.monotonic() + 10
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(child)


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit may wait for an init that does not reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
