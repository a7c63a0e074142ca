"""Where the acoustic model runs: PyTorch, ONNX Runtime or OpenVINO, behind one call.

A Runner is called as the model is:

    runner(features (N, F, T) float32, lengths (N,) int64) -> (log_probs (T', N, 29) float32, out_lengths (N,))

so everything around it (features, normalisation, decoding, error counts, throughput:
pytorch.inference) is the same code for every backend, and so is the WER. `load` takes a training
checkpoint (.pt) for any backend, exporting it for the ONNX ones on the way (pytorch.export, parity
checked), or an exported .onnx file for the ONNX ones.
"""

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

import params
from data.labels import LABELS
from data.normalization import FeatureStats
from exit_status import Failure, UsageError
from pytorch import export, inference
from pytorch.model import MIN_FRAMES

BACKENDS = ("torch", "onnxruntime", "openvino")


class BackendError(Failure):
    """A model file a backend cannot run, or a backend that is not installed."""


class TorchRunner:
    """The PyTorch model itself, in eval mode on its device and in its own precision."""

    name = "torch"

    def __init__(self, model, p: params.Params):
        self.model, self.p = model, p
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def __call__(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(features.to(self.device, non_blocking=True), lengths)

    def feature_stats(self):
        return self.model.feature_stats()


class OnnxRunner:
    """An exported graph (pytorch.export) on the CPU. Subclasses run it: `_run(features, lengths)` on numpy."""

    name = "onnx"
    device = torch.device("cpu")

    def __init__(self, path: Path, p: params.Params, feature_stats):
        self.path, self.p, self._feature_stats = path, p, feature_stats

    def __call__(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if features.shape[2] < MIN_FRAMES:  # the graph has no shape branch: pad as the model would
            features = F.pad(features, (0, MIN_FRAMES - features.shape[2]))
        features = np.ascontiguousarray(features.detach().cpu().float().numpy())
        log_probs, out_lengths = self._run(features, lengths.cpu().numpy().astype(np.int64))
        return torch.from_numpy(log_probs), torch.from_numpy(out_lengths)

    def feature_stats(self):
        return self._feature_stats


class OnnxRuntimeRunner(OnnxRunner):
    name = "onnxruntime"

    def __init__(self, path: Path, p: params.Params, feature_stats, threads: int | None = None):
        super().__init__(path, p, feature_stats)
        onnxruntime = _import("onnxruntime")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _run(self, features: np.ndarray, lengths: np.ndarray):
        return self.session.run(list(export.OUTPUTS), {"features": features, "lengths": lengths})


class OpenVinoRunner(OnnxRunner):
    name = "openvino"

    def __init__(self, path: Path, p: params.Params, feature_stats, threads: int | None = None):
        super().__init__(path, p, feature_stats)
        openvino = _import("openvino")
        # f32 inference: on CPUs with bf16 units OpenVINO would otherwise compute in bf16 by default,
        # and the transcripts must be the model's. LATENCY: one request at a time, as this code sends them.
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        core = openvino.Core()
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def _run(self, features: np.ndarray, lengths: np.ndarray):
        results = self.request.infer({"features": features, "lengths": lengths})
        return tuple(np.array(results[self.compiled.output(name)]) for name in export.OUTPUTS)


ONNX_RUNNERS = {"onnxruntime": OnnxRuntimeRunner, "openvino": OpenVinoRunner}


def _import(module: str):
    try:
        return __import__(module)
    except ImportError as err:
        raise BackendError(
            f"--backend {module}: {module} is not installed ({err}); pip install -r requirements.txt"
        ) from None


def read_onnx_metadata(path: Path) -> tuple[params.Params, object]:
    """(Params, feature statistics or None) from an exported model's metadata; BackendError naming the file."""
    onnx = _import("onnx")
    try:
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    except Exception as err:  # onnx raises its own DecodeError/ValidationError types  # noqa: BLE001
        raise BackendError(f"{path}: not a readable ONNX model ({err})") from None
    missing = [key for key in export.METADATA_KEYS if key not in props]
    if missing:
        raise BackendError(f"{path}: not written by pytorch.export (metadata lacks {', '.join(missing)})")
    if json.loads(props["labels"]) != list(LABELS):
        raise BackendError(f"{path}: its labels are not this project's 29 (data/labels.py)")
    try:
        p = params.make(json.loads(props["params"]))
    except params.ParamError as err:
        raise BackendError(f"{path}: its parameters do not fit this version's params.py: {err}") from None
    if not props["feature_stats"]:
        return p, None
    try:
        stats = FeatureStats.from_json(json.loads(props["feature_stats"]))
    except ValueError as err:  # json.JSONDecodeError is one
        raise BackendError(f"{path}: its feature_stats metadata is unusable: {err}") from None
    if stats.n_features != p.n_features:
        raise BackendError(f"{path}: feature_stats of {stats.n_features} bins for n_features={p.n_features}")
    return p, stats


def load(path, backend: str = "torch", device="cpu", precision: str | None = None, threads: int | None = None):
    """A Runner of the model in `path` (a training checkpoint .pt, or for the ONNX backends an exported
    .onnx) on `backend`. Errors (exit status 1) name the file; a backend/option mismatch is a UsageError."""
    path = Path(path)
    if backend not in BACKENDS:
        raise UsageError(f"--backend {backend}: one of {', '.join(BACKENDS)}")
    onnx_file = path.suffix == ".onnx"
    if backend == "torch":
        if onnx_file:
            raise UsageError(
                f"{path}: the torch backend runs a training checkpoint (.pt); run .onnx files with "
                "--backend onnxruntime or openvino"
            )
        return TorchRunner(*inference.load_model(path, device, precision))
    if torch.device(device).type != "cpu":
        raise UsageError(f"--device {device}: the {backend} backend runs on the CPU here; use --backend torch")
    if precision not in (None, "fp32"):
        raise UsageError(f"--precision {precision}: the {backend} backend runs the exported float32 graph")
    if onnx_file:
        _import(backend)
        if not path.is_file():
            raise BackendError(f"{path}: no such file")
        return ONNX_RUNNERS[backend](path, *read_onnx_metadata(path), threads=threads)
    return from_model(*inference.load_model(path, "cpu", "fp32"), [backend], threads)[backend]


def from_model(model, p: params.Params, names, threads: int | None = None) -> dict:
    """{backend: Runner} of a model in memory on each of `names`: the model itself for torch; for the
    ONNX backends one export (parity checked) that each runtime loads."""
    onnx_names = [name for name in names if name != "torch"]
    for name in onnx_names:
        _import(name)  # say it is missing before exporting anything
    runners = {"torch": TorchRunner(model, p)} if "torch" in names else {}
    if onnx_names:
        p = dataclasses.replace(p, precision="fp32")
        stats = model.feature_stats()
        # The runtimes read the whole file at load, so the export can go once they have it.
        with export.exported(model, p) as onnx_path:
            runners |= {name: ONNX_RUNNERS[name](onnx_path, p, stats, threads=threads) for name in onnx_names}
    return {name: runners[name] for name in names}


def add_argument(parser: argparse.ArgumentParser) -> None:
    """--backend, with the text every command shares."""
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="where the model runs: torch (default), or onnxruntime / openvino on the CPU (a .pt checkpoint is "
        "exported on the way, parity checked; or give an .onnx file from python -m pytorch.export)",
    )
