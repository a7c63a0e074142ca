"""bench/startup_memory.py on a few hundred rows: the dataset it builds, and the figures it reports."""

import json
import os

import numpy as np
import pytest

import params
from bench import startup_memory
from data.manifest import Manifest
from pytorch.loader import CHARS_PER_SECOND


def test_built_rows_have_librispeech_lengths_and_share_the_shards(tmp_path):
    args = startup_memory.parse_args(["--rows", "400", "--val-rows", "20", "--shards", "3"])
    p = params.make({"preset": "tiny"})
    startup_memory.build_dataset(tmp_path, args, p)
    train = Manifest.read(tmp_path / "manifests" / "train.jsonl")
    assert len(train) == 400 and len(Manifest.read(tmp_path / "manifests" / "val.jsonl")) == 20
    assert train.duration.mean() == pytest.approx(12.3, abs=0.5) and np.all(np.diff(train.duration) >= 0)
    chars_per_second = train.transcripts.lengths() / train.duration
    assert np.median(chars_per_second) == pytest.approx(CHARS_PER_SECOND, rel=0.05)
    assert len(train.shards) == 3 and len(set(train.ids[i] for i in range(len(train)))) == 400
    assert set(train.transcripts.chars.tobytes().decode()) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ")


def test_private_memory_is_part_of_the_resident():
    memory = startup_memory.memory_of(os.getpid())
    assert 0 < memory["private_dirty"] <= memory["uss"] <= memory["rss"] and memory["pss"] <= memory["rss"]


def test_measures_start_up_and_each_worker_over_an_epoch(tmp_path, capsys):
    out = tmp_path / "figures.json"
    argv = ["--rows", "300", "--val-rows", "10", "--shards", "2", "--samples", "2", "--json", str(out)]
    assert startup_memory.main([*argv, "preset=tiny", "num_workers=2", "max_duration=0"]) == 0
    result = json.loads(out.read_text())
    assert result["rows"] == 300 and result["epoch_utterances"] == 300 and result["batches"] == 75
    assert [s["batch"] for s in result["memory"]] == [1, 38, 75]  # the start, then evenly to the end
    assert all(len(s["workers"]) == 2 for s in result["memory"])
    assert set(result["seconds"]) >= {"open_train_split", "global_batches", "first_batch", "epoch"}
    text = capsys.readouterr().out
    assert "300 training rows" in text and "worker uss growth over the epoch" in text


def test_bad_counts_are_usage_errors(capsys):
    assert startup_memory.main(["--rows", "0"]) == 2
    assert "must be at least 1" in capsys.readouterr().err
