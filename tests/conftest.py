"""Fixtures shared by more than one test file. Helpers that build data on disk live in the
tests/*_fixtures.py and tests/corpus.py modules; test files never import each other."""

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
    checkpoint.save(path, checkpoint.snapshot(model, optimizer, None, p, {"epoch": 1}))
    return model


@pytest.fixture(scope="session")
def write_checkpoint():
    """write_checkpoint(path, p, seed=0) -> the model: a checkpoint as training writes it
    (checkpoint.snapshot + save) of a randomly initialised model."""
    return _write_checkpoint
