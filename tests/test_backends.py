"""pytorch.backends: PyTorch, ONNX Runtime and OpenVINO give the same transcripts and the same WER
through pytorch.evaluate and pytorch.transcribe; mismatched files and options are named."""

import json
import re

import numpy as np
import pytest
import soundfile
import torch

import params
from pytorch import backends, evaluate, export, inference, transcribe
from pytorch.model import MIN_FRAMES, DeepSpeech2
from tests import trainer_fixtures

ONNX_BACKENDS = ("onnxruntime", "openvino")
# requirements-deploy.txt: installed by make setup, not carried to GPU machines by the wheelhouse.
for _module in ("onnx", *ONNX_BACKENDS):
    pytest.importorskip(_module, reason=f"{_module} is not installed (requirements-deploy.txt)")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, write_checkpoint):
    """(checkpoint, its export, data dir, Params) of a random tiny model and the trainer's tiny dataset."""
    root = tmp_path_factory.mktemp("backends")
    p = params.make({"preset": "tiny"})
    data_dir = trainer_fixtures.write_dataset(root / "data", p)
    write_checkpoint(root / "ckpt.pt", p, seed=3)
    assert export.main(["--checkpoint", str(root / "ckpt.pt")]) == 0
    return root / "ckpt.pt", root / "ckpt.onnx", data_dir, p


@pytest.fixture(scope="module")
def runners(setup):
    ckpt, onnx_path, _, _ = setup
    return {name: backends.load(onnx_path if name != "torch" else ckpt, name) for name in backends.BACKENDS}


def test_every_backend_gives_the_same_transcripts(runners, setup):
    """Random utterances of many lengths (the shortest the model takes, shorter, long), batched and padded."""
    p = setup[3]
    generator = torch.Generator().manual_seed(0)
    for batch, frames in [(1, MIN_FRAMES), (1, 12), (4, 90), (7, 400), (2, 1500)]:
        features = torch.randn(batch, p.n_features, frames, generator=generator)
        lengths = torch.randint(min(frames, MIN_FRAMES), frames + 1, (batch,), generator=generator)
        lengths[0] = frames
        outputs = {name: runner(features, lengths) for name, runner in runners.items()}
        transcripts = {name: inference.GREEDY.decode(*out) for name, out in outputs.items()}
        assert transcripts["onnxruntime"] == transcripts["torch"] == transcripts["openvino"], (batch, frames)
        for name in ONNX_BACKENDS:
            np.testing.assert_array_equal(outputs[name][1].numpy(), outputs["torch"][1].numpy())
            np.testing.assert_allclose(outputs[name][0].numpy(), outputs["torch"][0].numpy(), atol=1e-3)


def _wer_line(out: str) -> str:
    return re.search(r"^WER \(corpus\): .*$", out, re.M).group(0)


def test_evaluate_gives_the_same_wer_and_predictions_on_every_backend(setup, tmp_path, capsys):
    ckpt, onnx_path, data_dir, _ = setup
    lines, predictions = {}, {}
    for name in backends.BACKENDS:
        source = ckpt if name in ("torch", "openvino") else onnx_path  # a .pt is exported on the way
        written = tmp_path / f"{name}.jsonl"
        argv = [
            "--checkpoint",
            str(source),
            "--data-dir",
            str(data_dir),
            "--backend",
            name,
            "--predictions",
            str(written),
        ]
        assert evaluate.main(argv) == 0
        out = capsys.readouterr().out
        assert f"backend {name}" in out
        lines[name] = _wer_line(out)
        predictions[name] = [json.loads(line) for line in written.read_text().splitlines()]
    assert lines["onnxruntime"] == lines["torch"] == lines["openvino"]
    assert predictions["onnxruntime"] == predictions["torch"] == predictions["openvino"]


def test_transcribe_takes_a_backend(setup, tmp_path, capsys):
    ckpt, onnx_path, _, p = setup
    audio = tmp_path / "a.wav"
    samples = np.random.default_rng(0).uniform(-0.3, 0.3, p.sample_rate).astype(np.float32)
    soundfile.write(audio, samples, p.sample_rate)
    outputs = {}
    for name in backends.BACKENDS:
        assert (
            transcribe.main(
                ["--checkpoint", str(onnx_path if name != "torch" else ckpt), "--backend", name, str(audio)]
            )
            == 0
        )
        outputs[name] = capsys.readouterr().out
    assert outputs["onnxruntime"] == outputs["torch"] == outputs["openvino"]


def test_mismatches_are_named(setup, tmp_path, capsys):
    ckpt, onnx_path, data_dir, _ = setup
    base = ["--data-dir", str(data_dir)]
    assert evaluate.main(["--checkpoint", str(onnx_path), *base]) == 2  # torch runs .pt files
    assert f"{onnx_path}: the torch backend runs a training checkpoint" in capsys.readouterr().err
    assert evaluate.main(["--checkpoint", str(ckpt), *base, "--backend", "onnxruntime", "--device", "cuda"]) == 2
    assert "--device cuda: the onnxruntime backend runs on the CPU" in capsys.readouterr().err
    assert evaluate.main(["--checkpoint", str(ckpt), *base, "--backend", "openvino", "--precision", "bf16"]) == 2
    assert "--precision bf16" in capsys.readouterr().err
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    assert evaluate.main(["--checkpoint", str(garbage), *base, "--backend", "onnxruntime"]) == 1
    assert f"{garbage}: not a readable ONNX model" in capsys.readouterr().err
    assert evaluate.main(["--checkpoint", str(tmp_path / "none.onnx"), *base, "--backend", "openvino"]) == 1
    assert "none.onnx: no such file" in capsys.readouterr().err


def test_a_foreign_onnx_model_is_refused(tmp_path):
    """An ONNX file without pytorch.export's metadata: its labels and output rule are unknown."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(backends.BackendError, match="not written by pytorch.export"):
        backends.load(path, "onnxruntime")


def test_a_global_normalised_model_carries_its_statistics_into_the_export(tmp_path, write_checkpoint):
    """normalization=global: the training set's statistics are in the checkpoint, then in the ONNX
    metadata, so an exported model alone normalises its input as training did."""
    from data.normalization import FeatureStats

    p = params.make({"preset": "tiny", "normalization": "global", "bidirectional": False})
    model = write_checkpoint(tmp_path / "g.pt", p)
    stats = FeatureStats(torch.linspace(-1, 1, p.n_features), torch.linspace(0.5, 2, p.n_features))
    model.set_feature_stats(stats)
    from pytorch import checkpoint

    saved = checkpoint.load(tmp_path / "g.pt")
    checkpoint.save(tmp_path / "g.pt", saved | {"model": model.state_dict()})
    assert export.main(["--checkpoint", str(tmp_path / "g.pt")]) == 0
    for runner in (backends.load(tmp_path / "g.pt"), backends.load(tmp_path / "g.onnx", "onnxruntime")):
        assert torch.equal(runner.feature_stats().mean, stats.mean) and torch.equal(
            runner.feature_stats().std, stats.std
        )


def test_several_onnx_backends_share_one_export(setup, monkeypatch):
    """bench.inference_latency's side-by-side run exports a model once, however many runtimes load it."""
    _, _, _, p = setup
    calls = []
    real = export.export
    monkeypatch.setattr(export, "export", lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    runners = backends.from_model(DeepSpeech2(p).eval(), p, list(backends.BACKENDS))
    assert list(runners) == list(backends.BACKENDS) and len(calls) == 1
