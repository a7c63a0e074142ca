"""bench/gpu_check.py (make gpu-check) where it can be tested: without CUDA, and its report."""

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
