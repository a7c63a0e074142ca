"""pytorch.memory: the run's longest micro-batch found, run once before the clock, and every kind of
device allocation failure turned into one error that names the knobs which size it."""

import copy

import pytest
import torch

import params
from pytorch import distributed, loader, memory, train
from tests import trainer_fixtures

TINY = ["preset=tiny"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return trainer_fixtures.write_dataset(tmp_path_factory.mktemp("data"))


def trainer_of(p) -> train.Trainer:
    return train.build_trainer(p, distributed.single("cpu"), total_steps=10)


def check(trainer, split, loss_of=None):
    loss_of = loss_of or (lambda batch: train.micro_batch_loss(trainer.model, batch, trainer.p, trainer.world.device))
    return memory.check(trainer.model, trainer.optimizer, split, trainer.p, trainer.world, loss_of)


def test_largest_micro_batch_is_the_most_padded_frames_of_the_run(data_dir):
    p = params.parse(TINY + ["batch_size=8", "gradient_accumulation_steps=2", "tempo_perturb=false"])
    split = loader.open_split(data_dir, "train")
    n, frames = memory.largest_micro_batch(split, p, distributed.single("cpu"))
    by_hand = max(
        (len(part), int(split.manifest.frames[part[-1]]))
        for b in loader.global_batches(len(split), 8, False, 1, 0)
        for part in loader.split_evenly(b, 2)
        if part
    )
    assert (n, frames) == by_hand
    slowed = params.parse(
        TINY + ["batch_size=8", "gradient_accumulation_steps=2", "tempo_perturb=true", "tempo_low=0.5"]
    )
    assert memory.largest_micro_batch(split, slowed, distributed.single("cpu")) == (n, 2 * frames)


def test_memory_check_runs_the_longest_micro_batch_and_changes_nothing(data_dir):
    trainer = trainer_of(params.parse(TINY + ["batch_size=8"]))
    before = copy.deepcopy(trainer.model.state_dict())
    figures = check(trainer, loader.open_split(data_dir, "train"))
    assert figures.utterances >= 1 and figures.frames > 0 and figures.peak_bytes is None
    after = trainer.model.state_dict()  # num_batches_tracked counts forwards; it changes no result
    assert all(torch.equal(t, before[n]) for n, t in after.items() if "num_batches" not in n)
    assert all(t.grad is None for t in trainer.model.parameters())


@pytest.mark.parametrize(
    "failure",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB"),
        RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),  # cuDNN's workspace, near the limit
        RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    ],
    ids=["torch", "cudnn", "cublas"],
)
def test_out_of_memory_on_the_longest_micro_batch_names_the_knobs_that_size_it(data_dir, failure):
    def too_big(batch):
        raise failure

    trainer = trainer_of(params.parse(TINY + ["batch_size=8", "gradient_accumulation_steps=2", "max_duration=30"]))
    with pytest.raises(memory.OutOfMemory) as err:
        check(trainer, loader.open_split(data_dir, "train"), too_big)
    for knob in ("batch_size=8", "gradient_accumulation_steps=2", "max_duration=30", "utterances of up to"):
        assert knob in str(err.value)
    assert all(t.grad is None for t in trainer.model.parameters())


def test_other_runtime_errors_are_not_taken_for_out_of_memory(data_dir):
    def broken(batch):
        raise RuntimeError("cuDNN error: CUDNN_STATUS_BAD_PARAM")

    trainer = trainer_of(params.parse(TINY))
    with pytest.raises(RuntimeError, match="BAD_PARAM"):
        check(trainer, loader.open_split(data_dir, "train"), broken)
    assert not memory.is_out_of_memory(ValueError("out of memory"))  # only the libraries' RuntimeErrors
