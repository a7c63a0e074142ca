"""pytorch.evaluate: a tiny checkpoint evaluated on the trainer's tiny prepared dataset."""

import json
import re
import subprocess
import sys

import jiwer
import pytest
import torch

import params
from pytorch import checkpoint
from pytorch.evaluate import main
from pytorch.inference import load_model
from tests import trainer_fixtures


@pytest.fixture(scope="module")
def setup(tmp_path_factory, write_checkpoint):
    """(checkpoint path, data dir, Params) for preset=tiny."""
    root = tmp_path_factory.mktemp("evaluate")
    p = params.make({"preset": "tiny"})
    data_dir = trainer_fixtures.write_dataset(root / "data", p)
    write_checkpoint(root / "ckpt.pt", p)
    return root / "ckpt.pt", data_dir, p


def _figure(text: str, label: str) -> float:
    match = re.search(rf"^{re.escape(label)}: ([0-9.]+)", text, re.MULTILINE)
    assert match, f"no {label!r} line in:\n{text}"
    return float(match.group(1))


def test_prints_error_rates_of_its_predictions(setup, tmp_path, capsys):
    ckpt, data_dir, _ = setup
    predictions = tmp_path / "pred.jsonl"
    assert main(["--checkpoint", str(ckpt), "--data-dir", str(data_dir), "--predictions", str(predictions)]) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    manifest = [json.loads(line) for line in (data_dir / "manifests" / "val.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in manifest)
    refs, hyps = [r["reference"] for r in rows], [r["hypothesis"] for r in rows]
    # Independent arithmetic: jiwer on the written predictions must give the printed figures.
    assert _figure(out, "WER (corpus)") == pytest.approx(100 * jiwer.wer(refs, hyps), abs=0.006)
    assert _figure(out, "CER") == pytest.approx(100 * jiwer.cer(refs, hyps), abs=0.006)
    assert _figure(out, "utterances") == len(manifest)
    assert _figure(out, "audio") == pytest.approx(sum(r["duration"] for r in manifest), abs=0.05)
    assert re.search(r"throughput: [0-9.]+ utt/s, [0-9.]+ audio-s/s, real-time factor [0-9.]+", out)
    assert "WER (per-utterance mean" in out


def test_batch_size_does_not_change_the_result(setup, tmp_path, capsys):
    ckpt, data_dir, _ = setup
    outputs = []
    for batch in ("1", "5"):
        predictions = tmp_path / f"pred{batch}.jsonl"
        assert (
            main(
                [
                    "--checkpoint",
                    str(ckpt),
                    "--data-dir",
                    str(data_dir),
                    "--split",
                    "train",
                    "--batch-size",
                    batch,
                    "--predictions",
                    str(predictions),
                    # the CPU, not the default cuda where there is one: equal outputs for batch 1
                    # and 5 need its determinism (cuDNN picks kernels by batch size)
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
        outputs.append(sorted(predictions.read_text().splitlines()))
    capsys.readouterr()
    assert outputs[0] == outputs[1]


def test_load_model_restores_the_saved_model(setup, tmp_path, write_checkpoint):
    _, _, p = setup
    saved = write_checkpoint(tmp_path / "c.pt", p, seed=7).eval()
    loaded, loaded_p = load_model(tmp_path / "c.pt", "cpu")
    assert loaded_p == p and not loaded.training
    features, lengths = torch.randn(2, p.n_features, 60), torch.tensor([60, 45])
    with torch.no_grad():
        assert torch.equal(saved(features, lengths)[0], loaded(features, lengths)[0])


def test_missing_checkpoint_exits_1_naming_it(setup, tmp_path, capsys):
    _, data_dir, _ = setup
    missing = tmp_path / "nope.pt"
    assert main(["--checkpoint", str(missing), "--data-dir", str(data_dir)]) == 1
    assert str(missing) in capsys.readouterr().err


def test_corrupt_checkpoint_exits_1_naming_it(setup, tmp_path, capsys):
    _, data_dir, _ = setup
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    assert main(["--checkpoint", str(corrupt), "--data-dir", str(data_dir)]) == 1
    assert str(corrupt) in capsys.readouterr().err


def test_checkpoint_of_another_shape_exits_1(setup, tmp_path, capsys):
    ckpt, data_dir, _ = setup
    state = torch.load(ckpt, weights_only=True)
    state["params"]["hidden_size"] = 32  # the tensors are of hidden_size 16
    bad = tmp_path / "shape.pt"
    checkpoint.save(bad, state)
    assert main(["--checkpoint", str(bad), "--data-dir", str(data_dir)]) == 1
    assert str(bad) in capsys.readouterr().err


def test_missing_manifest_exits_1_naming_it(setup, capsys):
    ckpt, data_dir, _ = setup
    assert main(["--checkpoint", str(ckpt), "--data-dir", str(data_dir), "--split", "test"]) == 1
    assert str(data_dir / "manifests" / "test.jsonl") in capsys.readouterr().err


def test_corrupt_manifest_exits_1_naming_file_and_line(setup, capsys):
    ckpt, data_dir, _ = setup
    (data_dir / "manifests" / "broken.jsonl").write_text('{"id": "x"\n')
    assert main(["--checkpoint", str(ckpt), "--data-dir", str(data_dir), "--split", "broken"]) == 1
    assert f"{data_dir / 'manifests' / 'broken.jsonl'}:1" in capsys.readouterr().err


def test_features_of_other_parameters_exit_1(setup, tmp_path, capsys):
    ckpt, _, _ = setup
    other = trainer_fixtures.write_dataset(tmp_path / "data", params.make({"preset": "tiny", "window_size": 0.02}))
    assert main(["--checkpoint", str(ckpt), "--data-dir", str(other)]) == 1
    err = capsys.readouterr().err
    assert str(other / "features" / "features.json") in err and "n_features" in err


def test_bad_usage_exits_2():
    done = subprocess.run([sys.executable, "-m", "pytorch.evaluate", "--batch-size", "0", "--checkpoint", "x"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and "--batch-size 0" in done.stderr


def test_help():
    out = subprocess.run(
        [sys.executable, "-m", "pytorch.evaluate", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--checkpoint" in out and "--split" in out and "--precision" in out
