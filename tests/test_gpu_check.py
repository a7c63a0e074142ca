"""make gpu-check (scripts/gpu-check.sh -> bench/gpu_check.py) where it can be tested: without CUDA,
the script itself, the budgets (derived, enforced, overridable), its report rewritten after every
step, and the whole check rehearsed on this CPU (--rehearse)."""

import json
import math
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from bench import cost_model, gpu_check

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu-check.sh"
NO_CUDA = pytest.mark.skipif(
    torch.cuda.is_available(), reason="this machine has a CUDA device: gpu-check runs for real"
)


def _run_script(*args, cwd, python=sys.executable, timeout=120) -> subprocess.CompletedProcess:
    env = dict(os.environ, DS2_PYTHON=str(python))
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@NO_CUDA
def test_gpu_check_without_cuda_says_so_and_fails(tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path / "report")]) == 1
    err = capsys.readouterr().err
    assert "make gpu-check needs a CUDA device" in err and "sees none" in err and "--rehearse" in err
    assert not (tmp_path / "report").exists()


@NO_CUDA
def test_the_script_without_cuda_says_so_from_any_directory(tmp_path):
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
    assert done.returncode == 0 and all(word in done.stdout for word in ("--skip", "--budget", "--rehearse"))


def test_bad_budgets_are_usage_errors(capsys):
    for bad in ("sweep", "sweep=0", "nap=10", "sweep=ten"):
        with pytest.raises(SystemExit) as exit_:
            gpu_check.parse_args(["--budget", bad])
        assert exit_.value.code == 2
    assert "STEP=SECONDS" in capsys.readouterr().err
    assert dict(gpu_check.parse_args(["--budget", "sweep=30", "--budget", "tests=5"]).budget) == {
        "sweep": 30,
        "tests": 5,
    }


def test_gpu_budgets_are_the_cost_models_estimates_with_a_margin_and_fit_one_call():
    plan = gpu_check.make_plan(rehearsal=False, quick=False, overrides={})
    estimates = plan.estimates
    assert estimates["sweep"] == pytest.approx(
        cost_model.sweep_seconds(gpu_check.params_default(), gpu_check.SWEEP_BUCKETS, gpu_check.SWEEP_STEPS)
    )
    assert plan.budgets == {step: math.ceil(gpu_check.MARGIN * estimates[step]) for step in gpu_check.STEPS}
    assert sum(plan.budgets.values()) <= gpu_check.CALL_S - gpu_check.REPORT_S  # one 10-minute call
    assert gpu_check.make_plan(False, False, {"sweep": 12}).budgets["sweep"] == 12


def test_a_step_past_its_budget_is_stopped_with_all_its_processes(tmp_path):
    pid_file = tmp_path / "child.pid"
    command = ["bash", "-c", f"sleep 60 & echo $! > {pid_file}; wait"]
    result = gpu_check.run_step("tests", command, tmp_path, budget_s=1)
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


def test_a_sweep_stopped_at_its_budget_keeps_its_figures_and_names_the_rest(tmp_path, monkeypatch):
    """A stand-in sweep writes its first configuration's figures as bench.epoch_time does, then
    outlasts its budget: the report holds the figures and names the two configurations not reached."""
    figures = {
        "planned": ["a", "b", "c"],
        "results": [_sweep_row("a")],
        "not_reached": ["b", "c"],
        "complete": False,
    }
    script = textwrap.dedent(f"""
        import json, sys, time
        open(sys.argv[1], "w").write(json.dumps({figures!r}))
        time.sleep(60)
    """)
    monkeypatch.setattr(gpu_check, "sweep_command", lambda plan, out: [sys.executable, "-c", script, str(out)])
    plan = gpu_check.make_plan(rehearsal=True, quick=False, overrides={"sweep": 2})
    step = gpu_check.sweep_step(tmp_path, plan)
    assert step["status"] == "timeout" and [r["config"] for r in step["results"]] == ["a"]
    text = gpu_check.markdown({"environment": _environment(), "steps": {"sweep": step}})
    assert "| first: a | float32 on cudnn | 0.200-0.400 |" in text
    assert "NOT REACHED within the budget: b" in text and "NOT REACHED within the budget: c" in text
    assert "| sweep | timeout |" in text and "| train | not run |" in text


def _sweep_row(config: str) -> dict:
    return {
        "label": "first",
        "config": config,
        "recurrent_dtype": "float32",
        "recurrent_kernel": "cudnn",
        "buckets": [{"step_s": 0.2}, {"step_s": 0.4}],
        "utt_per_s": 30.0,
        "peak_memory_bytes": 2**33,
        "efficiency": 0.1,
        "epoch_s": 7200.0,
        "ten_epochs_s": 72000.0,
    }


def _environment() -> dict:
    return {
        "date": "d",
        "host": "h",
        "rehearsal": False,
        "cpus": 16,
        "python": "3.12",
        "torch": "2.11",
        "cuda": "13.0",
        "cudnn_compiled": "9.20.0",
        "cudnn_runtime": "9.24.0",
        "nccl": "2.27",
        "driver": "580",
        "gpus": [{"name": "H100", "memory_gib": 79.1, "capability": "9.0", "multiprocessors": 132}],
        "fp32_math_by_default": {"matmul": "none"},
        "recurrent_kernels": {"bf16": "bfloat16 on cudnn"},
    }


def test_the_report_renders_every_step():
    steps = {
        "tests": {"status": 0, "seconds": 5, "budget_s": 9, "cases": {"test_x": "passed"}},
        "sweep": {
            "status": 0,
            "seconds": 9,
            "budget_s": 9,
            "results": [_sweep_row("batch=8"), {"config": "b", "error": "out of memory"}],
        },
        "train": {"status": 1, "seconds": 60, "budget_s": 9, "result": {"status": "aborted"}},
    }
    text = gpu_check.markdown({"environment": _environment(), "steps": steps, "estimates": {"sweep": 100.0}})
    assert "1 x H100 (79.1 GiB, sm 9.0)" in text and "cuDNN 9.20.0 compiled / 9.24.0 loaded" in text
    assert "| train | FAILED (exit 1) | 60 | 9 |" in text and "- test_x: passed" in text
    assert "| first: batch=8 | float32 on cudnn | 0.200-0.400 | 30 | 8.0 | 10.0% | 2.00 h | 20.0 h |" in text
    assert "out of memory" in text and "bf16: bfloat16 on cudnn" in text and "ESTIMATED" in text


def test_every_cuda_test_lives_where_make_gpu_check_runs_them():
    """gpu-check runs tests/test_cuda.py: a CUDA test anywhere else would never run on a GPU."""
    pattern = re.compile(r"mark\.cuda|skipif\(not torch\.cuda\.is_available\(\)")
    elsewhere = [
        p.name for p in (REPO / "tests").glob("test_*.py") if p.name != "test_cuda.py" and pattern.search(p.read_text())
    ]
    assert elsewhere == [], f"CUDA tests outside tests/test_cuda.py: {elsewhere}"


def test_the_rehearsal_runs_every_step_on_this_cpu(tmp_path):
    """The whole check as a GPU machine runs it, CPU-sized: environment, the rehearsable CUDA tests on
    the CPU, the tiny sweep, a demo run to its target, and both reports."""
    out = tmp_path / "report"
    done = _run_script("--rehearse", "--out", str(out), cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert (
        report["environment"]["rehearsal"]
        and report["environment"]["recurrent_kernels"]["bf16"] == "bfloat16 on native"
    )
    assert {name: step["status"] for name, step in report["steps"].items()} == {"tests": 0, "sweep": 0, "train": 0}
    assert report["steps"]["tests"]["cases"]["test_resume_on_cuda_continues_the_run"] == "passed"
    sweep = report["steps"]["sweep"]
    assert sweep["results"][0]["label"].startswith("default recipe") and sweep["not_reached"] == []
    assert all(r["epoch_s"] > 0 and r["recurrent_kernel"] == "native" for r in sweep["results"])
    trained = report["steps"]["train"]["result"]
    assert trained["status"] == "success" and trained["precision"]["recurrent_kernel"] == "native"
    text = (out / "report.md").read_text()
    assert text.startswith("# gpu-check REHEARSAL on a CPU") and "NOT REACHED" not in text
