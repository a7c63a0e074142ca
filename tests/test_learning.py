"""Training learns, and at the pace it should: a small model reads a small corpus back within three
epochs, and the same run at a tenth of the learning rate does not.

The corpus (tests/trainer_fixtures.write_learning_dataset) is 160 training and 40 validation sentences
of 1-3 words from a 10-word vocabulary, each character a fixed spectral pattern: about 80 validation
words, so the WER moves in steps of about one point. Measured on this project's 2-core CPU with the
configuration below (2026-12-02, torch 2.13.0), validation WER after 3 epochs:
    lr 1e-2: 14.1 (seed 1), 1.4 (seed 2), 1.4 (seed 3);   lr 3e-3: 59.2;   lr 1e-3: 69.0  (all-blank: 100)
so the bound of 30 holds with a margin of 2x over the worst seed and fails for a learning-rate rule off
by 3x or more. About 5 s a run.
"""

import json

import pytest

import params
from exit_status import ExitStatus
from pytorch import train
from tests import trainer_fixtures

LEARNS = [
    "preset=tiny",
    "hidden_size=64",
    "conv_channels=8",
    "optimizer=adamw",
    "batch_size=8",
    "epochs=3",
    "target_wer=0",  # all three epochs, whatever the WER
]
WER_BOUND = 30.0


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return trainer_fixtures.write_learning_dataset(tmp_path_factory.mktemp("data"), params.parse(LEARNS))


def final_wer(data_dir, results_dir, lr: str) -> float:
    args = ["--data-dir", str(data_dir), "--results-dir", str(results_dir), "--device", "cpu", *LEARNS, f"lr={lr}"]
    assert train.main(args) in (ExitStatus.OK, ExitStatus.TARGET_MISSED)
    return json.loads((results_dir / "result.json").read_text())["final_wer"]


def test_a_small_model_learns_to_read_the_corpus_within_three_epochs(data_dir, tmp_path):
    assert final_wer(data_dir, tmp_path / "r", "1e-2") <= WER_BOUND


def test_a_learning_rate_ten_times_too_low_misses_the_same_bound(data_dir, tmp_path):
    """The bound above is tight enough to catch a learning rate off by a large factor."""
    assert final_wer(data_dir, tmp_path / "r", "1e-3") > WER_BOUND
