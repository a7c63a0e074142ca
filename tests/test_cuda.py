"""CUDA tests: what a GPU machine must prove that a CPU cannot. Skipped without a CUDA device.

Every CUDA test of the repository is here (tests/test_gpu_check.py keeps it so), and `make gpu-check` runs
this file on a GPU machine and puts the verdicts in its report. Those marked cuda(rehearse=True) are
about the code around the kernels; `scripts/gpu-check.sh --rehearse` runs them on a CPU (conftest.py),
so that a test which cannot pass is found before a GPU is. Every other test file either passes on a
CUDA machine too or pins itself to the CPU, saying why (exact equality of two runs needs the CPU's
determinism: CTC's backward on CUDA accumulates with atomics).
"""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import bench
import data
import params
import presets
import pytorch
import synthetic
from data.features import extract
from pytorch import distributed, loader, precision, train
from pytorch.batchnorm import masked_batch_norm
from pytorch.model import DeepSpeech2, probe_recurrent
from tests import trainer_fixtures

pytestmark = pytest.mark.cuda
REPO = Path(__file__).resolve().parents[1]
# The project's own code: a warning from any other file (torch, even where torch is installed in the
# repository's .venv) is not ours.
OUR_CODE = [Path(m.__file__).parent for m in (bench, data, presets, pytorch, synthetic)] + [Path(params.__file__)]
# A per-epoch schedule (as the CPU twin in tests/test_train.py): a run cut short by epochs=1 follows
# the same learning rates as the first epoch of a 2-epoch run, which onecycle (sized by epochs) does not.
TINY = ["preset=tiny", "optimizer=adamw", "lr=1e-2", "lr_schedule=anneal", "target_wer=0"]


@pytest.fixture(autouse=True)
def true_fp32():
    """fp32 means float32 in these comparisons (torch lets cuDNN use TF32 by default)."""
    before = precision.fp32_math_in_effect()
    precision.set_fp32_math("ieee")
    yield
    torch.backends.cuda.matmul.fp32_precision = before["matmul"]
    torch.backends.cudnn.conv.fp32_precision = before["cudnn_conv"]
    torch.backends.cudnn.rnn.fp32_precision = before["cudnn_rnn"]


@pytest.mark.parametrize("name", ["fp32", "bf16", "fp16"])
def test_the_probe_observes_the_kernel_the_compiled_cudnn_predicts(name):
    """The dtype the GRU computes in, and its kernel read off the autograd node, equal what torch's
    compiled cuDNN version and this GPU predict (precision.expected_cuda_kernel)."""
    found = probe_recurrent(params.make({"precision": name}), torch.device("cuda"))
    dtype = precision.compute_dtype(name)
    expected = precision.expected_cuda_kernel(
        dtype, precision.cudnn_versions()["compiled"], torch.cuda.get_device_capability(), torch.backends.cudnn.enabled
    )
    assert found == precision.RecurrentKernel(str(dtype).removeprefix("torch."), expected, "cuda")


def test_features_on_cuda_equal_the_cpu_features():
    p = params.make()
    y = torch.from_numpy(np.random.default_rng(0).uniform(-0.5, 0.5, 8000).astype(np.float32))
    torch.testing.assert_close(extract(y.cuda(), p).cpu(), extract(y, p), atol=1e-4, rtol=1e-4)


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
    ours = [w for w in syncs if any(Path(w.filename).resolve().is_relative_to(code) for code in OUR_CODE)]
    theirs = [w for w in syncs if w not in ours]
    assert len(ours) == 3, [(w.filename, w.lineno) for w in ours]
    allowed = ("functional.py", "graph.py", "_tensor.py", "__init__.py")  # F.ctc_loss; CTC's backward
    assert all(Path(w.filename).name in allowed for w in theirs), [(w.filename, w.lineno) for w in theirs]


def _train(data, results_dir, *words, nproc=1, env_extra=None, device="cuda:0"):
    common = ["--data-dir", str(data), "--results-dir", str(results_dir), "--device", device, *TINY, *words]
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


@pytest.mark.cuda(rehearse=True)
def test_resume_on_cuda_continues_the_run(tmp_path, cuda_device):
    data = trainer_fixtures.write_dataset(tmp_path / "data")
    whole = _train(data, tmp_path / "whole", "epochs=2", device=cuda_device)
    _train(data, tmp_path / "split", "epochs=1", device=cuda_device)
    split = _train(data, tmp_path / "split", "epochs=2", "--resume", device=cuda_device)
    assert [m["epoch"] for m in split] == [1, 2]
    assert split[1]["train_loss"] == pytest.approx(whole[1]["train_loss"], rel=1e-3)
