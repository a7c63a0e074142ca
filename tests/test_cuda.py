"""CUDA-only tests: what a GPU machine must prove that a CPU cannot. Skipped without a CUDA device.

`make gpu-check` runs them on a GPU machine and puts the verdicts in its report. Every other test
file either passes on a CUDA machine too or pins itself to the CPU, saying why (exact equality of
two runs needs the CPU's determinism: CTC's backward on CUDA accumulates with atomics).
"""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import params
from pytorch import distributed, loader, precision, train
from pytorch.model import DeepSpeech2, masked_batch_norm, probe_recurrent_dtype
from tests import trainer_fixtures

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
REPO = Path(__file__).resolve().parents[1]
TINY = ["preset=tiny", "optimizer=adamw", "lr=1e-2", "target_wer=0"]


@pytest.fixture(autouse=True)
def true_fp32():
    """fp32 means float32 in these comparisons (torch lets cuDNN use TF32 by default)."""
    before = precision.fp32_math_in_effect()
    precision.set_fp32_math("ieee")
    yield
    torch.backends.cuda.matmul.fp32_precision = before["matmul"]
    torch.backends.cudnn.conv.fp32_precision = before["cudnn_conv"]
    torch.backends.cudnn.rnn.fp32_precision = before["cudnn_rnn"]


@pytest.mark.parametrize("name, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_precision_probe_reports_what_the_gru_computes_in(name, dtype):
    assert probe_recurrent_dtype(params.make({"precision": name}), torch.device("cuda")) == dtype


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_masked_batch_norm_under_autocast_equals_float32(dtype):
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 9, device="cuda")
    mask = torch.arange(9, device="cuda")[None, :] < torch.tensor([9, 4, 7, 2], device="cuda")[:, None]
    mask = mask.float()[:, None, None, :]
    reference = masked_batch_norm(torch.nn.BatchNorm2d(3).cuda().train(), x, mask)
    with torch.autocast("cuda", dtype=dtype):
        low = masked_batch_norm(torch.nn.BatchNorm2d(3).cuda().train(), x.to(dtype), mask)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, reference, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("name, tolerance", [("fp32", 1e-4), ("bf16", 5e-2)])
def test_cuda_output_equals_cpu_output(name, tolerance):
    p = params.make({"preset": "tiny", "precision": name})
    torch.manual_seed(0)
    model = DeepSpeech2(p).eval()
    x, lengths = torch.randn(3, p.n_features, 70), torch.tensor([70, 44, 31])
    with torch.no_grad():
        cpu, cpu_lengths = model(x, lengths)
        gpu, gpu_lengths = model.cuda()(x.cuda(), lengths)
    assert gpu_lengths.device.type == "cpu" and torch.equal(gpu_lengths, cpu_lengths)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=tolerance, rtol=tolerance)


def test_a_training_step_reads_from_the_device_once(tmp_path):
    """The trainer's own code synchronises with the GPU once per optimiser step (the step summary);
    the only other synchronisations are torch's CUDA CTC copying its length arrays to the device."""
    p = params.make({"preset": "tiny", "optimizer": "adamw", "batch_size": 8, "gradient_accumulation_steps": 2})
    trainer = train.build_trainer(p, distributed.single("cuda"), total_steps=10)
    generator = torch.Generator().manual_seed(0)
    batches = [loader.Batch.synthetic(4, p.n_features, 300, generator).pin_memory() for _ in range(2)]
    train.train_step(trainer, batches, 8)  # warm-up: cuDNN plans, allocator
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                train.train_step(trainer, batches, 8)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    ours = [w for w in syncs if Path(w.filename).resolve().is_relative_to(REPO)]
    theirs = [w for w in syncs if w not in ours]
    assert len(ours) == 3, [(w.filename, w.lineno) for w in ours]
    allowed = ("functional.py", "graph.py", "_tensor.py", "__init__.py")  # F.ctc_loss; CTC's backward
    assert all(Path(w.filename).name in allowed for w in theirs), [(w.filename, w.lineno) for w in theirs]


def _train(data, results_dir, *words, nproc=1, env_extra=None):
    common = ["--data-dir", str(data), "--results-dir", str(results_dir), "--device", "cuda:0", *TINY, *words]
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    if nproc == 1:
        command = [sys.executable, "-m", "pytorch.train", *common]
    else:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
        command = [*launch, "-m", "pytorch.train", "--dist-backend", "gloo", *common]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 3), done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads(line) for line in (results_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_ranks_on_one_gpu_equal_one_rank(tmp_path):
    """Two ranks sharing one GPU over gloo (which all-reduces CUDA tensors) exercise DDP and the
    synchronised BatchNorm on CUDA: with statistics shared over both ranks' micro-batches, they take
    the steps of one rank on the whole global batch (not of one rank with 2 accumulation steps, whose
    micro-batches normalise over themselves: that is the CPU's equivalence, tests/test_run_and_time.py).
    The fixture's 24 training utterances make 3 whole batches of 8, so there is no short tail batch,
    which the two ranks would leave out. Close, not equal: CUDA's CTC backward is not deterministic."""
    data = trainer_fixtures.write_dataset(tmp_path / "data")
    assert len(loader.open_split(data, "train")) % 8 == 0
    one = _train(data, tmp_path / "one", "batch_size=8", "epochs=2")
    two = _train(data, tmp_path / "two", "batch_size=8", "epochs=2", nproc=2)
    for a, b in zip(one, two, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)
        assert abs(b["wer"] - a["wer"]) <= 10.0


def test_resume_on_cuda_continues_the_run(tmp_path):
    data = trainer_fixtures.write_dataset(tmp_path / "data")
    whole = _train(data, tmp_path / "whole", "epochs=2")
    _train(data, tmp_path / "split", "epochs=1")
    split = _train(data, tmp_path / "split", "epochs=2", "--resume")
    assert [m["epoch"] for m in split] == [1, 2]
    assert split[1]["train_loss"] == pytest.approx(whole[1]["train_loss"], rel=1e-3)
