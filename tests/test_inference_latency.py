"""bench.inference_latency on a tiny grid: the table and JSON are there and say what was run."""

import json

import pytest

import params
from bench.inference_latency import COLUMNS, frames_for, main, summarise

TINY_GRID = ["--batch-sizes", "1,2", "--durations", "0.5", "--warmup", "0", "--iterations", "1"]


def test_tiny_grid_prints_the_table_and_writes_json(tmp_path, capsys):
    out_json = tmp_path / "latency.json"
    assert main(["preset=tiny", *TINY_GRID, "--json", str(out_json)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = "| " + " | ".join(COLUMNS) + " |"
    assert header in lines and "p99 (ms)" in header and "audio-s/s" in header
    table = lines[lines.index(header) + 2 :]
    assert [row.split("|")[2].strip() for row in table] == ["1", "2"]
    report = json.loads(out_json.read_text())
    assert report["params"]["hidden_size"] == params.make({"preset": "tiny"}).hidden_size
    assert [(r["batch"], r["duration_s"]) for r in report["rows"]] == [(1, 0.5), (2, 0.5)]
    assert all(r["avg_ms"] > 0 for r in report["rows"])


def test_checkpoint_weights_are_timed(tmp_path, capsys, write_checkpoint):
    p = params.make({"preset": "tiny", "hidden_size": 24})
    write_checkpoint(tmp_path / "c.pt", p)
    assert main(["--checkpoint", str(tmp_path / "c.pt"), *TINY_GRID, "--json", str(tmp_path / "j.json")]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "j.json").read_text())["params"]["hidden_size"] == 24


def test_frames_and_statistics():
    p = params.make()
    assert frames_for(2.0, p) == 201 and frames_for(16.7, p) == 1671
    row = summarise("m", 4, 2.0, [0.1, 0.2, 0.3, 0.4])
    assert row["avg_ms"] == 250.0 and row["p50_ms"] == 250.0
    # Linear interpolation between order statistics: rank q/100 * (n - 1).
    assert row["p90_ms"] == pytest.approx(370.0) and row["p99_ms"] == pytest.approx(397.0)
    assert row["utterances_per_s"] == 4 / 0.25 and row["audio_s_per_s"] == 8 / 0.25


def test_bad_input_is_named_with_its_exit_status(tmp_path, capsys):
    assert main(["hiden_size=3"]) == 2
    assert "hiden_size" in capsys.readouterr().err
    assert main(["preset=tiny", "--precision", "fp16", "--device", "cpu"]) == 2
    assert "precision='fp16': needs CUDA" in capsys.readouterr().err
    assert main(["--checkpoint", str(tmp_path / "no.pt")]) == 1
    assert str(tmp_path / "no.pt") in capsys.readouterr().err
