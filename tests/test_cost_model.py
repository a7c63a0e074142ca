"""bench.cost_model: the arithmetic of the H100 estimate (no device involved)."""

import pytest

import params
from bench import cost_model
from bench.epoch_time import librispeech_durations


def test_a_frame_of_the_full_gru_is_bound_by_reading_w_hh():
    p = params.make({"precision": "fp32"})
    read = 3 * 2560 * 2560 * 4 / (cost_model.H100.hbm_bytes_s * cost_model.H100.bandwidth_share)  # 78.6 MB
    assert cost_model.recurrent_frame_s(p, cost_model.H100, 1) == pytest.approx(read)
    half = params.make({"precision": "bf16"})
    assert cost_model.recurrent_frame_s(half, cost_model.H100, 32) == pytest.approx(read / 2)  # still read-bound


def test_eight_gpus_share_the_default_recipes_micro_batches():
    p, durations = params.make(), librispeech_durations()
    one, eight = (cost_model.estimate(p, durations, gpus) for gpus in (1, 8))
    assert (one["accumulation"], eight["accumulation"], one["micro_batch"]) == (8, 1, 32)
    assert one["utterances"] == len(durations) == 281_241  # every training utterance (max_duration is 0)
    cut = cost_model.estimate(params.make({"max_duration": 16.7}), durations, 1)  # an experiment's cut
    assert cut["utterances"] == (durations <= 16.7).sum() < 281_241
    assert 7.0 < one["epoch_s"] / eight["epoch_s"] <= 8.0  # same micro-batches, in parallel, one optimiser step
    assert one["ten_epochs_s"] == pytest.approx(10 * one["epoch_s"])


def test_the_parameter_count_is_the_models(capsys):
    assert cost_model.n_parameters(params.make()) == 207_352_608
    assert cost_model.main(["preset=tiny", "--gpus", "1", "2"]) == 0
    assert "ESTIMATE (cost model, not measured)" in capsys.readouterr().out
