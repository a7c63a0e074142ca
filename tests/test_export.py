"""pytorch.export: an ONNX graph with dynamic axes whose log-probabilities are PyTorch's, its metadata,
and a failed export that leaves nothing behind."""

import json

import numpy as np
import pytest
import torch

import params
from data.labels import LABELS
from pytorch import export
from pytorch.export import main
from pytorch.model import MIN_FRAMES, DeepSpeech2

# requirements-deploy.txt: installed by make setup, not carried to GPU machines by the wheelhouse.
onnx = pytest.importorskip("onnx", reason="onnx is not installed (requirements-deploy.txt)")
onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (requirements-deploy.txt)")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, write_checkpoint):
    """(onnx path, the PyTorch model in eval mode, Params) of a random tiny model with non-trivial BatchNorm."""
    root = tmp_path_factory.mktemp("export")
    p = params.make({"preset": "tiny"})
    model = write_checkpoint(root / "ckpt.pt", p).eval()
    assert main(["--checkpoint", str(root / "ckpt.pt")]) == 0
    return root / "ckpt.onnx", model, p


@pytest.mark.parametrize(
    "batch, frames",
    [(1, MIN_FRAMES), (1, MIN_FRAMES + 1), (2, 64), (5, 333), (8, 120), (1, 2000)],
)
def test_log_probabilities_match_pytorch_at_any_batch_and_length(exported, batch, frames):
    path, model, p = exported
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    torch.manual_seed(frames)
    features = torch.randn(batch, p.n_features, frames)
    lengths = torch.randint(MIN_FRAMES, frames + 1, (batch,))
    lengths[0] = frames  # the padded length is the longest one's, as the loader pads
    with torch.no_grad():
        expected, expected_lengths = model(features, lengths)
    got, got_lengths = session.run(None, {"features": features.numpy(), "lengths": lengths.numpy()})
    np.testing.assert_array_equal(got_lengths, expected_lengths.numpy())
    assert got.shape == tuple(expected.shape)
    np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=export.PARITY_ATOL)
    # Not only close but the same labels frame by frame: greedy transcripts cannot differ.
    for n, length in enumerate(expected_lengths.tolist()):
        assert (got[:length, n].argmax(-1) == expected[:length, n].argmax(-1).numpy()).all()


def test_metadata_holds_what_a_runtime_needs(exported):
    path, _, p = exported
    props = {prop.key: prop.value for prop in onnx.load(str(path)).metadata_props}
    assert set(export.METADATA_KEYS) <= set(props)
    assert params.make(json.loads(props["params"])) == p
    assert json.loads(props["labels"]) == list(LABELS)
    assert int(props["min_frames"]) == MIN_FRAMES
    assert props["output_lengths"] == export.OUTPUT_LENGTHS_RULE
    # The rule written down is the model's own rule.
    frames = torch.arange(0, 300)
    rule = eval(props["output_lengths"], {"max": np.maximum, "frames": frames.numpy()})  # noqa: S307 (our own file)
    from pytorch.model import output_lengths

    np.testing.assert_array_equal(rule, output_lengths(frames).numpy())
    graph = onnx.load(str(path)).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims == {"features": ["batch", p.n_features, "frames"], "lengths": ["batch"]}


def test_failed_parity_check_leaves_no_file(tmp_path, monkeypatch):
    p = params.make({"preset": "tiny"})
    monkeypatch.setattr(export, "PARITY_ATOL", -1.0)  # no difference can pass
    out = tmp_path / "m.onnx"
    with pytest.raises(export.ExportError, match="differ from PyTorch's"):
        export.export(DeepSpeech2(p), p, out)
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs_are_named(tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "missing.pt")]) == 1
    assert "missing.pt" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", "x.pt", "--out", "x.txt"])
    assert exit_info.value.code == 2
    assert "--out x.txt: must end in .onnx" in capsys.readouterr().err


def test_int8_quantisation_keeps_the_metadata_and_runs(exported, tmp_path):
    source, model, p = exported
    out = tmp_path / "q.onnx"
    assert main(["--checkpoint", str(source.with_suffix(".pt")), "--out", str(out), "--quantize", "int8"]) == 0
    props = {prop.key: prop.value for prop in onnx.load(str(out)).metadata_props}
    assert props["quantization"].startswith("int8") and set(export.METADATA_KEYS) <= set(props)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["q.onnx"]  # no intermediate file left
    features, lengths = export.example_inputs(p, 2, 300)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got, _ = session.run(None, {"features": features.numpy(), "lengths": lengths.numpy()})
    with torch.no_grad():
        expected, _ = model(features, lengths)
    # Quantised: close to the float model's log-probabilities, not equal to them.
    assert got.shape == tuple(expected.shape) and np.abs(got - expected.numpy()).max() < 1.0


def test_export_leaves_the_callers_model_as_it_was(tmp_path):
    """The graph is traced from a float32 CPU copy in eval mode: a model still training, or running on
    another backend, is not switched to eval mode (or moved) under its owner."""
    p = params.make({"preset": "tiny"})
    model = DeepSpeech2(p).train()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    export.export(model, p, tmp_path / "m.onnx")
    assert model.training
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
