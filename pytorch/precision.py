"""What `precision` and `fp32_math` mean, on every device: the one owner of the model's number formats.

    precision   convolutions, BatchNorm, head   recurrent layers (99.9% of the weights)   CTC loss
    fp32        float32                         float32                                   float32
    bf16        bfloat16 autocast               bfloat16, cast explicitly                 float32
    fp16        float16 autocast                float16, cast explicitly (+ GradScaler)   float32  (CUDA only)

Master weights, gradients and optimiser state stay float32 in every case.

Why the recurrent layers are cast explicitly instead of left to autocast: torch's autocast wrapper for
cuDNN RNNs casts to float16 whatever the autocast dtype (except in builds with cuDNN >= 9.13), so
under a bf16 autocast the GRUs would silently compute in fp16 without loss scaling; and on CPU
autocast leaves them in float32.

Which KERNEL runs them matters as much as the dtype, and the output dtype says nothing about it: on
CUDA, cuDNN takes a bf16 GRU only where torch was COMPILED against cuDNN >= 9.13 (and the GPU is
sm >= 8.0); elsewhere ATen's per-time-step fallback runs silently, slower and with more memory, and
still returns bf16. model.probe_recurrent() runs one tiny layer on the training device and reads the
kernel off its output's autograd node (`recurrent_kernel`); the trainer logs dtype and kernel and
refuses a CUDA run whose recurrent layers would not run on cuDNN unless allow_native_rnn=true
(`require_fast_kernel`).

fp32_math (CUDA): 'ieee' makes fp32 mean float32 everywhere; 'tf32' lets matmuls, cuDNN convolutions
and cuDNN RNNs use TF32 (10-bit mantissa), which torch's defaults allow for cuDNN silently.
"""

import warnings
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from exit_status import UsageError

COMPUTE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Casting the weights per call hands cuDNN separate tensors, which it packs itself: expected, not a problem.
warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk")


# The first cuDNN whose RNNs take bfloat16, and the oldest GPU it does so on (ATen's
# supportsBFloat16RNNWithCuDNN: CUDNN_VERSION >= 91300, compute capability >= 8.0; pytorch PR #164411).
CUDNN_BF16_RNN = (9, 13, 0)
CUDNN_BF16_RNN_CAPABILITY = (8, 0)
# Autograd node of a recurrent layer's output -> the kernel that computed it; anything else is ATen's
# own per-time-step loop (StackBackward0 on CPU, and on CUDA where cuDNN declines).
KERNEL_OF_NODE = {"CudnnRnnBackward0": "cudnn", "MiopenRnnBackward0": "miopen", "MkldnnRnnLayerBackward0": "onednn"}


class PrecisionError(UsageError):
    """A precision the device cannot compute in, or only on a slow path (exit status 2, before any work)."""


@dataclass(frozen=True)
class RecurrentKernel:
    """What a recurrent layer really computes in, and with which kernel, on one device (probed)."""

    dtype: str  # float32, bfloat16 or float16
    kernel: str  # cudnn, native (ATen's per-time-step loop), onednn or miopen
    device_type: str  # cpu or cuda


def kernel_of(output: torch.Tensor) -> str:
    """The kernel that computed a recurrent layer's raw output (T, N, H), from its autograd node;
    the output must have been computed with grad enabled."""
    if output.grad_fn is None:
        raise ValueError("kernel_of needs an output computed with autograd on (no grad_fn)")
    return KERNEL_OF_NODE.get(output.grad_fn.name(), "native")


def version_text(version: tuple | None) -> str:
    return ".".join(map(str, version)) if version else "none"


def cudnn_versions() -> dict:
    """The cuDNN torch was compiled against and the one it loaded: {'compiled': (9, 10, 2), 'runtime': ...}
    (None where this torch has no cuDNN, e.g. a CPU build). Only the compiled one decides bf16 RNNs."""
    binding = getattr(torch._C, "_cudnn", None)
    if binding is None:
        return {"compiled": None, "runtime": None}
    runtime = binding.getRuntimeVersion() if torch.backends.cudnn.is_available() else None
    return {"compiled": tuple(binding.getCompileVersion()), "runtime": tuple(runtime) if runtime else None}


def expected_cuda_kernel(dtype: torch.dtype, compiled_cudnn: tuple | None, capability: tuple, enabled: bool) -> str:
    """The kernel torch picks for a CUDA GRU in `dtype` (a prediction from versions; the probe observes)."""
    if not enabled or compiled_cudnn is None:
        return "native"
    if dtype == torch.bfloat16 and (compiled_cudnn < CUDNN_BF16_RNN or capability < CUDNN_BF16_RNN_CAPABILITY):
        return "native"
    return "cudnn"


def require_fast_kernel(precision: str, found: RecurrentKernel, allowed: bool, versions: dict, capability) -> None:
    """PrecisionError for a CUDA run whose recurrent layers would not run on cuDNN (unless allowed):
    ATen's per-time-step fallback is several times slower and holds more memory, and no log would
    otherwise say so."""
    if found.device_type != "cuda" or found.kernel == "cudnn" or allowed:
        return
    compiled, runtime = version_text(versions.get("compiled")), version_text(versions.get("runtime"))
    sm = ".".join(map(str, capability)) if capability else "?"
    raise PrecisionError(
        f"precision={precision!r}: the recurrent layers would run in {found.dtype} on ATen's per-time-step "
        f"fallback, not cuDNN (slower, more memory): torch {torch.__version__} was compiled against cuDNN "
        f"{compiled} (runtime {runtime}), GPU sm {sm}; cuDNN runs bfloat16 RNNs only when torch is compiled "
        f"against cuDNN >= {version_text(CUDNN_BF16_RNN)} on sm >= {version_text(CUDNN_BF16_RNN_CAPABILITY)}. "
        "Use precision=fp16 (cuDNN, with loss scaling) or precision=fp32 (fp32_math=tf32 for speed), a torch "
        "built against cuDNN >= 9.13 (e.g. the NGC 26.07 container of docker/), or allow the slow path "
        "with allow_native_rnn=true"
    )


def compute_dtype(precision: str) -> torch.dtype:
    return COMPUTE_DTYPES[precision]


def check(precision: str, device: torch.device) -> None:
    """fp16 needs CUDA: float16 training needs a GradScaler, which this benchmark runs on CUDA only."""
    if precision == "fp16" and torch.device(device).type != "cuda":
        raise PrecisionError(
            "precision='fp16': needs CUDA (float16 with a GradScaler); use precision=bf16 or fp32 on CPU"
        )


def autocast(precision: str, device_type: str):
    """The autocast context of the non-recurrent layers (a no-op for fp32)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type, dtype=compute_dtype(precision))


def run_recurrent(rnn: nn.RNNBase, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """rnn over x (T, N, I) -> outputs (T, N, H) computed in `dtype`, autocast off.

    Weights and input are cast to dtype for this call only; the cast is differentiable, so the
    float32 master weights receive the gradients.
    """
    with torch.autocast(x.device.type, enabled=False):
        if dtype == torch.float32:
            return rnn(x.float())[0]
        weights = {name: w.to(dtype) for name, w in rnn.named_parameters()}
        return functional_call(rnn, weights, (x.to(dtype),))[0]


def set_fp32_math(mode: str) -> None:
    """'ieee' or 'tf32' for CUDA matmuls, cuDNN convolutions and cuDNN RNNs (process-wide)."""
    torch.backends.cuda.matmul.fp32_precision = mode
    torch.backends.cudnn.conv.fp32_precision = mode
    torch.backends.cudnn.rnn.fp32_precision = mode


def fp32_math_in_effect() -> dict:
    """What torch will do with float32 matmuls, convolutions and RNNs on CUDA now."""
    return {
        "matmul": torch.backends.cuda.matmul.fp32_precision,
        "cudnn_conv": torch.backends.cudnn.conv.fp32_precision,
        "cudnn_rnn": torch.backends.cudnn.rnn.fp32_precision,
    }


def grad_scaler(precision: str):
    """A GradScaler for fp16 (CUDA), None otherwise."""
    return torch.amp.GradScaler("cuda") if precision == "fp16" else None
