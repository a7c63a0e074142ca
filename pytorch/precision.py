"""What `precision` and `fp32_math` mean, on every device: the one owner of the model's number formats.

    precision   convolutions, BatchNorm, head   recurrent layers (99.9% of the weights)   CTC loss
    fp32        float32                         float32                                   float32
    bf16        bfloat16 autocast               bfloat16, cast explicitly                 float32
    fp16        float16 autocast                float16, cast explicitly (+ GradScaler)   float32  (CUDA only)

Master weights, gradients and optimiser state stay float32 in every case.

Why the recurrent layers are cast explicitly instead of left to autocast: torch's autocast wrapper for
cuDNN RNNs casts to float16 whatever the autocast dtype (except in builds with cuDNN >= 9.13), so
under a bf16 autocast the GRUs would silently compute in fp16 without loss scaling; and on CPU
autocast leaves them in float32. model.probe_recurrent_dtype() checks on the training device what
they really compute in, and the trainer logs it.

fp32_math (CUDA): 'ieee' makes fp32 mean float32 everywhere; 'tf32' lets matmuls, cuDNN convolutions
and cuDNN RNNs use TF32 (10-bit mantissa), which torch's defaults allow for cuDNN silently.
"""

import warnings
from contextlib import nullcontext

import torch
from torch import nn
from torch.func import functional_call

from exit_status import UsageError

COMPUTE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Casting the weights per call hands cuDNN separate tensors, which it packs itself: expected, not a problem.
warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk")


class PrecisionError(UsageError):
    """A precision the device cannot compute in (exit status 2, before any work)."""


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
