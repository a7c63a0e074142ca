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
    assert [row.split("|")[3].strip() for row in table] == ["1", "2"]
    report = json.loads(out_json.read_text())
    assert report["params"]["hidden_size"] == params.make({"preset": "tiny"}).hidden_size
    assert [(r["batch"], r["duration_s"]) for r in report["rows"]] == [(1, 0.5), (2, 0.5)]
    assert all(r["avg_ms"] > 0 for r in report["rows"])


def test_backends_side_by_side_with_the_wer_of_a_split(tmp_path, capsys, write_checkpoint):
    """One run: every backend on the same grid and the same split; the same WER, ratios against torch."""
    for module in ("onnx", "onnxruntime", "openvino"):
        pytest.importorskip(module, reason=f"{module} is not installed (requirements-deploy.txt)")
    from tests import trainer_fixtures

    p = params.make({"preset": "tiny"})
    data_dir = trainer_fixtures.write_dataset(tmp_path / "data", p)
    write_checkpoint(tmp_path / "c.pt", p)
    argv = ["--checkpoint", str(tmp_path / "c.pt"), *TINY_GRID, "--backends", "torch,onnxruntime,openvino"]
    assert main([*argv, "--data-dir", str(data_dir), "--json", str(tmp_path / "j.json")]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "j.json").read_text())
    assert [(r["backend"], r["batch"]) for r in report["rows"]] == [
        (b, n) for n in (1, 2) for b in ("torch", "onnxruntime", "openvino")
    ]
    assert all(r["x_torch"] == 1.0 for r in report["rows"] if r["backend"] == "torch")
    assert all(r["x_torch"] > 0 for r in report["rows"])
    split_rows = report["split_rows"]
    assert [r["backend"] for r in split_rows] == ["torch", "onnxruntime", "openvino"]
    assert len({r["wer"] for r in split_rows}) == 1 and split_rows[0]["utterances"] == 4
    assert "| WER (%) |" in out
    for bad, message in [
        (["--data-dir", str(data_dir)], "--data-dir needs --checkpoint"),  # the WER of random weights: refused
        (["--backends", "torch,tensorrt"], "'torch,tensorrt': expected some of torch, onnxruntime, openvino"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["preset=tiny", *TINY_GRID, *bad])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


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
