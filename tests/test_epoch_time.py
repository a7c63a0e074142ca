"""bench/epoch_time.py on CPU with the tiny preset: the projection's arithmetic and its outputs."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import params
from bench import epoch_time
from tests import trainer_fixtures

REPO = Path(__file__).resolve().parents[1]


def test_librispeech_shaped_durations_have_its_size_total_and_tail():
    seconds = epoch_time.librispeech_durations()
    assert len(seconds) == 281_241 and seconds.sum() / 3600 == pytest.approx(960.9)
    assert seconds.mean() == pytest.approx(12.3, abs=0.01) and 34 < seconds.max() <= 35.2
    assert np.all(np.diff(seconds) >= 0)


def test_buckets_cover_every_step_once_with_per_device_micro_batches():
    durations = epoch_time.librispeech_durations()[::100]
    p = params.make({"preset": "tiny", "batch_size": 32, "gradient_accumulation_steps": 2})
    buckets = epoch_time.buckets_of(durations, p, world_size=4, n_buckets=5)
    assert len(buckets) == 5 and sum(b.steps for b in buckets) == -(-len(durations) // 32)
    assert sum(b.utterances for b in buckets) == len(durations)
    assert all(b.micro_batch == 4 for b in buckets)  # 32 / (4 devices x 2 accumulation steps)
    assert [b.frames for b in buckets] == sorted(b.frames for b in buckets)


def test_projection_on_cpu(tmp_path, capsys):
    out = tmp_path / "e.json"
    assert epoch_time.main(["preset=tiny", "--buckets", "2", "--steps", "1", "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert result["epoch_s"] == pytest.approx(sum(b["steps"] * b["step_s"] for b in result["buckets"]))
    assert result["ten_epochs_s"] == pytest.approx(10 * result["epoch_s"])
    utterances = sum(b["utterances"] for b in result["buckets"])
    assert utterances == 281_241  # every training utterance: max_duration is fixed at 0
    durations = epoch_time.librispeech_durations()
    cut = epoch_time.trained_durations(durations, params.make({"max_duration": 16.7}))  # as the loader cuts
    assert len(cut) == (durations <= 16.7).sum() and 0.95 * 281_241 < len(cut) < 281_241
    assert result["utt_per_s"] == pytest.approx(utterances / result["epoch_s"])
    assert 0 < result["efficiency"] < 1 and (result["recurrent_dtype"], result["recurrent_kernel"]) == (
        "float32",
        "native",
    )
    assert "projected: one epoch" in capsys.readouterr().out


def test_real_durations_from_a_manifest(tmp_path, capsys):
    data = trainer_fixtures.write_dataset(tmp_path / "data")
    args = ["preset=tiny", "--manifest", str(data / "manifests" / "train.jsonl"), "--buckets", "1", "--steps", "1"]
    assert epoch_time.main(args) == 0
    assert "durations: 24 utterances" in capsys.readouterr().out


def test_the_sweep_measures_the_default_recipe_first_then_the_2018_run():
    args = epoch_time.parse_args(["preset=tiny", "--sweep", "--device", "cpu"])
    planned = epoch_time.configurations(args)
    (label, first, world), (label_2018, second, world_2018) = planned[:2]
    assert label.startswith("default recipe, bf16") and world == 8 and first.micro_batch(8) == 32
    assert first.hidden_size == params.make({"preset": "tiny"}).hidden_size  # the command line's model
    assert "2018" in label_2018 and (second.batch_size, second.precision, world_2018) == (8, "fp32", 1)
    assert not second.bidirectional and second.optimizer == "sgd"
    assert all(p.precision != "fp16" for _, p, _ in planned)  # fp16 needs CUDA
    assert len(planned) == len(epoch_time.SWEEP) - 1
    descriptions = [epoch_time.describe(p, w) for _, p, w in planned]
    assert len(set(descriptions)) == len(descriptions)  # each configuration is named apart in the JSON


def test_a_sweep_stopped_midway_keeps_what_it_measured(tmp_path):
    """--json is rewritten after every configuration: a sweep stopped at its budget (here, killed as
    soon as the first figures are written) leaves them, and names the configurations not reached."""
    out = tmp_path / "sweep.json"
    command = [sys.executable, "-m", "bench.epoch_time", "preset=tiny", "--sweep", "--buckets", "1", "--steps", "1"]
    sweep = subprocess.Popen([*command, "--device", "cpu", "--json", str(out)], cwd=REPO, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not out.exists() and time.monotonic() < deadline and sweep.poll() is None:
            time.sleep(0.05)
    finally:
        sweep.kill()
        sweep.wait()
    figures = json.loads(out.read_text())
    measured = [r["config"] for r in figures["results"]]
    assert figures["results"][0]["label"].startswith("default recipe") and figures["results"][0]["epoch_s"] > 0
    assert not figures["complete"] and figures["not_reached"]
    assert measured + figures["not_reached"] == figures["planned"]


def test_an_uneven_split_is_projected_as_the_trainer_runs_it(capsys):
    """The trainer cuts a global batch of 6 over 4 devices into parts of 2, 2, 1, 1 (loader.split_evenly)."""
    assert epoch_time.main(["preset=tiny", "batch_size=6", "--world-size", "4", "--buckets", "1", "--steps", "1"]) == 0
    assert "accumulation=1 world=4 (micro-batch 2/device)" in capsys.readouterr().out
