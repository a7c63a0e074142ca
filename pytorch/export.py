"""Export a trained checkpoint to ONNX: dynamic batch and time axes, and the metadata a runtime needs.

    python -m pytorch.export --checkpoint results/checkpoints/best.pt --out ds2.onnx

The graph is the model's own forward pass in float32 and eval mode:

    features (batch, n_features, frames) float32, lengths (batch,) int64
        -> log_probs (out_frames, batch, 29) float32, out_lengths (batch,) int64

with out_lengths = max(0, (lengths - 11) // 2 + 1 - 10) (pytorch.model.output_lengths) and frames
at least MIN_FRAMES (31): the model pads shorter inputs itself with a branch on the input's shape,
which a graph cannot hold, so runtimes pad them (pytorch.backends does). Everything else a runtime
needs is in the model's metadata_props (METADATA_KEYS): the parameters (features, model), the labels,
the output-length rule and the feature statistics of a normalization=global model.

Why the legacy TorchScript exporter (dynamo=False): torch >= 2.9's default dynamo exporter has written
GRUs with linear_before_reset=0 (results up to 14% off, pytorch#189225) and frozen the time length of
a bidirectional pattern (pytorch#191855). Whichever exporter, the parity check decides: after writing
the file, ONNX Runtime runs it at several batch sizes and lengths (the shortest input the model
accepts among them) and its log-probabilities must be within PARITY_ATOL of PyTorch's, or the
export fails and leaves no file.
--quantize int8 then rewrites the checked graph with ONNX Runtime's dynamic int8 quantisation (weights of
the GRUs, MatMuls and Convs in int8, activations quantised per call): smaller and faster on CPUs, no
longer equal to PyTorch's output, so measure its WER (pytorch.evaluate --backend onnxruntime) before
using it. Its metadata says so ("quantization").
Exit status (exit_status.py): 0 written, 1 an unusable checkpoint or a failed parity check, 2 bad usage.
"""

import argparse
import contextlib
import dataclasses
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

import exit_status
from data.files import replacing
from data.labels import LABELS
from params import Params
from pytorch import inference
from pytorch.model import MIN_FRAMES, DeepSpeech2

OPSET = 17
INPUTS = ("features", "lengths")
OUTPUTS = ("log_probs", "out_lengths")
DYNAMIC_AXES = {
    "features": {0: "batch", 2: "frames"},
    "lengths": {0: "batch"},
    "log_probs": {0: "out_frames", 1: "batch"},
    "out_lengths": {0: "batch"},
}
OUTPUT_LENGTHS_RULE = "max(0, (frames - 11) // 2 + 1 - 10)"
METADATA_KEYS = ("params", "labels", "output_lengths", "min_frames", "feature_stats", "exported_by")
QUANTIZATIONS = ("none", "int8")
# float32 log-probabilities through a few GRU layers: ONNX Runtime's kernels sum in other orders than
# PyTorch's; measured differences are about 1e-6 on the demo model.
PARITY_ATOL = 1e-4
# (batch, frames) checked after export: the shortest input with an output frame, a batch of uneven
# lengths, and a long utterance (about 17 s, LibriSpeech's longest training files).
PARITY_SHAPES = ((1, MIN_FRAMES), (3, 400), (1, 1700))


class ExportError(exit_status.Failure):
    """A model that cannot be exported faithfully."""


def metadata(p: Params, feature_stats) -> dict[str, str]:
    """The strings a runtime reads from the model's metadata_props (METADATA_KEYS)."""
    return {
        "params": json.dumps(p.to_dict()),
        "labels": json.dumps(list(LABELS)),
        "output_lengths": OUTPUT_LENGTHS_RULE,
        "min_frames": str(MIN_FRAMES),
        "feature_stats": json.dumps(feature_stats.to_json()) if feature_stats is not None else "",
        "exported_by": f"torch {torch.__version__} TorchScript exporter (dynamo=False), opset {OPSET}",
    }


def example_inputs(p: Params, batch: int, frames: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random features (batch, F, frames) and uneven lengths (batch,), the longest `frames`, all >= MIN_FRAMES."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, p.n_features, frames, generator=generator)
    lengths = torch.linspace(frames, max(MIN_FRAMES, frames // 2), batch).round().long()
    return features, lengths


def float32_copy(model: DeepSpeech2, p: Params) -> DeepSpeech2:
    """A float32 copy of `model` on the CPU in eval mode (whatever its precision and device): what the
    graph computes. The caller's model is left as it was (a torch backend may still be running it)."""
    copy = DeepSpeech2(dataclasses.replace(p, precision="fp32"))
    copy.load_state_dict(model.state_dict())
    return copy.eval()


def export(model: DeepSpeech2, p: Params, out: Path, quantize: str = "none") -> Path:
    """Write `model`'s float32 CPU graph to `out` as ONNX with METADATA_KEYS, after checking parity with
    ONNX Runtime, then quantised if asked; nothing is left at `out` if any step fails. -> out."""
    import onnx  # noqa: PLC0415 (deployment-only dependency)

    p = dataclasses.replace(p, precision="fp32")  # what the graph computes in
    model = float32_copy(model, p)
    # Trace with a batch of two uneven lengths, so the masking is traced in general form.
    features, lengths = example_inputs(p, 2, 200)
    with replacing(out, suffix=".onnx") as tmp:
        with warnings.catch_warnings():
            # The tracer warns about Python ints taken from shapes (conv output sizes); the dynamic axes
            # cover them, and the parity check below proves the graph at other shapes.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (features, lengths),
                str(tmp),
                dynamo=False,
                input_names=list(INPUTS),
                output_names=list(OUTPUTS),
                dynamic_axes=DYNAMIC_AXES,
                opset_version=OPSET,
            )
        graph = onnx.load(str(tmp))
        stats = model.feature_stats()
        onnx.helper.set_model_props(graph, metadata(p, stats))
        onnx.save(graph, str(tmp))
        worst = check_parity(model, p, tmp)
        if quantize == "int8":
            quantize_int8(tmp)
    print(f"parity: max |log-prob difference| {worst:.2e} (limit {PARITY_ATOL:g}) over shapes {PARITY_SHAPES}")
    return out


def quantize_int8(path: Path) -> None:
    """Rewrite the ONNX file at `path` with dynamic int8 quantisation, keeping its metadata."""
    import onnx  # noqa: PLC0415 (deployment-only dependency)
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415

    props = {prop.key: prop.value for prop in onnx.load(str(path)).metadata_props}
    quantized = path.with_name(path.stem + ".int8.onnx")
    try:
        quantize_dynamic(path, quantized, weight_type=QuantType.QInt8)
        graph = onnx.load(str(quantized))
        onnx.helper.set_model_props(graph, props | {"quantization": "int8 dynamic (onnxruntime.quantization)"})
        onnx.save(graph, str(path))
    finally:
        quantized.unlink(missing_ok=True)


def check_parity(model: DeepSpeech2, p: Params, path: Path) -> float:
    """Largest |log-prob| difference between PyTorch and ONNX Runtime over PARITY_SHAPES; ExportError
    when it exceeds PARITY_ATOL or an output length differs."""
    import onnxruntime  # noqa: PLC0415 (deployment-only dependency)

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch, frames in PARITY_SHAPES:
        features, lengths = example_inputs(p, batch, frames, seed=frames)
        with torch.no_grad():
            expected, expected_lengths = model(features, lengths)
        got, got_lengths = session.run(list(OUTPUTS), {"features": features.numpy(), "lengths": lengths.numpy()})
        if got.shape != tuple(expected.shape) or not np.array_equal(got_lengths, expected_lengths.numpy()):
            raise ExportError(
                f"ONNX output of shape {got.shape}, lengths {got_lengths.tolist()} for input (batch {batch}, "
                f"{frames} frames): PyTorch gives {tuple(expected.shape)}, {expected_lengths.tolist()}"
            )
        difference = float(np.abs(got - expected.numpy()).max())
        if not difference <= PARITY_ATOL:  # also catches NaN
            raise ExportError(
                f"ONNX log-probabilities differ from PyTorch's by {difference:.3g} (limit {PARITY_ATOL:g}) "
                f"at batch {batch} x {frames} frames"
            )
        worst = max(worst, difference)
    return worst


@contextlib.contextmanager
def exported(model: DeepSpeech2, p: Params):
    """A temporary ONNX file of `model` for the life of the block (for runtimes that load a file:
    pytorch.backends on a checkpoint or a model in memory)."""
    with tempfile.TemporaryDirectory(prefix="ds2-export-") as directory:
        path = Path(directory) / "model.onnx"
        with contextlib.redirect_stdout(sys.stderr):  # the parity line is a note, not a command's output
            export(model, p, path)
        yield path


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m pytorch.export",
        description="Export a DeepSpeech2 checkpoint to ONNX (dynamic batch and time axes, float32) with "
        "the metadata a runtime needs; checks its log-probabilities against PyTorch's with ONNX Runtime.",
        epilog="Run it with: python -m pytorch.evaluate --checkpoint model.onnx --backend onnxruntime|openvino "
        "(or pytorch.transcribe). Exit status: 0 written, 1 unusable checkpoint or failed parity check, "
        "2 bad usage.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="a .pt written by training")
    parser.add_argument(
        "--out", type=Path, help="the .onnx file to write (default: the checkpoint's name with .onnx beside it)"
    )
    parser.add_argument(
        "--quantize",
        choices=QUANTIZATIONS,
        default="none",
        help="int8: ONNX Runtime's dynamic int8 quantisation after the parity check (faster on CPUs; "
        "its WER differs: measure it) (default none)",
    )
    args = parser.parse_args(argv)
    args.out = args.out or args.checkpoint.with_suffix(".onnx")
    if args.out.suffix != ".onnx":
        parser.error(f"--out {args.out}: must end in .onnx")
    return args


def run(args) -> None:
    model, p = inference.load_model(args.checkpoint, "cpu", "fp32")
    export(model, p, args.out, args.quantize)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


def main(argv=None) -> int:
    args = parse_args(argv)
    return exit_status.run(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
