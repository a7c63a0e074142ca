"""Fixtures shared by more than one test file. Helpers that build data on disk live in the
tests/*_fixtures.py and tests/corpus.py modules; test files never import each other."""

import os

import pytest
import torch

import params
from pytorch import checkpoint
from pytorch.model import DeepSpeech2


def _write_checkpoint(path, p: params.Params, seed: int = 0) -> DeepSpeech2:
    torch.manual_seed(seed)
    model = DeepSpeech2(p)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a wrong load would show
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=p.lr)
    checkpoint.save(path, checkpoint.snapshot(model, optimizer, None, p, checkpoint.RunState(epoch=1)))
    return model


@pytest.fixture(scope="session")
def write_checkpoint():
    """write_checkpoint(path, p, seed=0) -> the model: a checkpoint as training writes it
    (checkpoint.snapshot + save) of a randomly initialised model."""
    return _write_checkpoint


# Set by `scripts/gpu-check.sh --rehearse` for its tests step (bench/gpu_check.py).
REHEARSAL = "DS2_GPU_CHECK_REHEARSAL"


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` (all in tests/test_cuda.py) need a CUDA device and are skipped without one,
    except in a gpu-check rehearsal on a CPU, where those marked cuda(rehearse=True) run on the CPU
    (`cuda_device`): the tests' own logic is rehearsed there, the CUDA kernels are not."""
    if torch.cuda.is_available():
        return
    rehearsal = os.environ.get(REHEARSAL) == "1"
    for item in items:
        marker = item.get_closest_marker("cuda")
        if marker is not None and not (rehearsal and marker.kwargs.get("rehearse")):
            why = "needs a CUDA device" + (" (its check is about CUDA itself: not rehearsed on a CPU)" * rehearsal)
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture
def cuda_device() -> str:
    """The device of a CUDA test: the GPU, or the CPU in a gpu-check rehearsal."""
    return "cuda:0" if torch.cuda.is_available() else "cpu"
