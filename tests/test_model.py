import pytest
import torch
from torch import nn

import params
from pytorch import precision
from pytorch.batchnorm import masked_batch_norm
from pytorch.model import (
    BatchRNN,
    DeepSpeech2,
    output_lengths,
    probe_recurrent,
    reverse_within_lengths,
)


def small(**overrides) -> DeepSpeech2:
    """An 81-bin model with the reference's shape, shrunk to run in milliseconds."""
    shape = dict(window_size=0.01, conv_channels=4, hidden_size=16, hidden_layers=2, precision="fp32")  # exact
    p = params.make(shape | overrides)
    torch.manual_seed(0)
    model = DeepSpeech2(p)
    # Non-trivial running statistics, so eval-mode BatchNorm is not the identity.
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return model


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("bidirectional, expected", [(True, 207_352_608), (False, 103_841_568)])
def test_parameter_count_matches_reference(bidirectional, expected):
    with torch.device("meta"):
        model = DeepSpeech2(params.make({"bidirectional": bidirectional}))
    assert count(model) == expected


def test_listing_reads_like_reference():
    with torch.device("meta"):
        text = repr(DeepSpeech2(params.make({})))
    for line in (
        "Conv2d(1, 32, kernel_size=(41, 11), stride=(2, 2))",
        "Conv2d(32, 32, kernel_size=(21, 11), stride=(2, 1))",
        "Hardtanh(min_val=0, max_val=20",
        "BatchNorm2d(32",
        "GRU(672, 2560)",
        "GRU(2560, 2560)",
        "directions summed",
        "BatchNorm1d(2560",
        "Linear(in_features=2560, out_features=29, bias=False)",
    ):
        assert line in text, line


def test_too_few_features_names_parameter():
    with pytest.raises(ValueError, match="n_features=41"):
        DeepSpeech2(_p_with_bins(41))


def _p_with_bins(bins: int):
    # feature=mfcc makes n_features = n_mfcc, an easy way to get any bin count.
    return params.make({"feature": "mfcc", "n_mfcc": bins, "n_mels": bins})


def test_rnn_input_follows_feature_count():
    with torch.device("meta"):
        model = DeepSpeech2(_p_with_bins(81))  # 81 -> 21 -> 1
    assert model.rnns[0].fwd.input_size == 32 * 1


def test_output_lengths_formula():
    lengths = torch.tensor([0, 10, 30, 31, 32, 33, 100, 1001])
    expected = [max(0, (t - 11) // 2 + 1 - 10) if t >= 11 else 0 for t in lengths.tolist()]
    assert output_lengths(lengths).tolist() == expected
    assert expected[:5] == [0, 0, 0, 1, 1]


@pytest.mark.parametrize("frames", [31, 32, 57, 120])
def test_shapes_and_lengths(frames):
    model = small().eval()
    lengths = torch.tensor([frames, max(31, frames - 7), 5])
    with torch.no_grad():
        log_probs, out_lengths = model(torch.randn(3, 81, frames), lengths)
    assert log_probs.shape == (output_lengths(torch.tensor([frames])).item(), 3, 29)
    assert out_lengths.tolist() == output_lengths(lengths).tolist()
    assert log_probs.dtype == torch.float32
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(log_probs.shape[:2]), atol=1e-5)


def test_forward_is_log_softmax_of_logits():
    model = small().eval()
    x, lengths = torch.randn(2, 81, 60), torch.tensor([60, 45])
    with torch.no_grad():
        logits, _ = model.logits(x, lengths)
        log_probs, _ = model(x, lengths)
    assert torch.allclose(log_probs, torch.log_softmax(logits, -1), atol=1e-6)


def test_bad_inputs_are_named():
    model = small()
    with pytest.raises(ValueError, match="n_features=81"):
        model(torch.randn(2, 80, 50), torch.tensor([50, 50]))
    with pytest.raises(ValueError, match="lengths of shape"):
        model(torch.randn(2, 81, 50), torch.tensor([50]))


@pytest.mark.parametrize("rnn_type, bidirectional", [("gru", True), ("gru", False), ("lstm", True)])
def test_eval_padding_does_not_change_result(rnn_type, bidirectional):
    model = small(rnn_type=rnn_type, bidirectional=bidirectional).eval()
    short = torch.randn(81, 47)
    batch = torch.randn(3, 81, 90) * 3 + 1  # padding region filled with noise, then zeroed as collate does
    batch[1] = 0
    batch[1, :, :47] = short
    lengths = torch.tensor([90, 47, 70])
    with torch.no_grad():
        alone, alone_len = model(short[None], torch.tensor([47]))
        padded, padded_len = model(batch, lengths)
    n = alone_len.item()
    assert padded_len[1].item() == n
    assert torch.allclose(padded[:n, 1], alone[:, 0], atol=1e-5)
    assert padded[n:, 1].abs().sum() > 0  # padding frames exist and are ignored, not absent


def test_train_mode_batch_norm_ignores_padding():
    model = small().train()
    twin = small().train()
    lengths = torch.tensor([64, 50, 33])
    x = torch.randn(3, 81, 64)
    for n, length in enumerate(lengths):
        x[n, :, length:] = 0
    wide = torch.cat([x, torch.zeros(3, 81, 40)], dim=2)
    out, out_len = model(x, lengths)
    out_wide, _ = twin(wide, lengths)
    for n, length in enumerate(out_len.tolist()):
        assert torch.allclose(out[:length, n], out_wide[:length, n], atol=1e-5)
    for a, b in zip(model.buffers(), twin.buffers()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


def test_masked_batch_norm_equals_batch_norm_without_padding():
    torch.manual_seed(1)
    ours, reference = nn.BatchNorm2d(5), nn.BatchNorm2d(5)
    x = torch.randn(4, 5, 7, 9) * 2 + 3
    for _ in range(2):
        y = masked_batch_norm(ours, x, torch.ones(4, 1, 1, 9))
        y_ref = reference(x)
    assert torch.allclose(y, y_ref, atol=1e-5)
    assert torch.allclose(ours.running_mean, reference.running_mean, atol=1e-6)
    assert torch.allclose(ours.running_var, reference.running_var, atol=1e-5)
    assert ours.num_batches_tracked.item() == 2


def test_masked_batch_norm_uses_valid_positions_only():
    bn = nn.BatchNorm1d(2, momentum=1.0)
    x = torch.tensor([[1.0, 10.0], [3.0, 20.0], [100.0, -100.0]])
    mask = torch.tensor([[1.0], [1.0], [0.0]])
    masked_batch_norm(bn, x, mask)
    assert bn.running_mean.tolist() == pytest.approx([2.0, 15.0])
    assert bn.running_var.tolist() == pytest.approx([2.0, 50.0])  # unbiased over 2 rows


def test_reverse_within_lengths():
    x = torch.arange(5.0)[:, None, None].expand(5, 2, 1)
    y = reverse_within_lengths(x, torch.tensor([5, 3]))
    assert y[:, 0, 0].tolist() == [4, 3, 2, 1, 0]
    assert y[:, 1, 0].tolist() == [2, 1, 0, 3, 4]
    assert torch.equal(reverse_within_lengths(y, torch.tensor([5, 3])), x)


def test_input_shorter_than_the_convolutions_take_gives_no_output_frame():
    """The model pads a batch shorter than MIN_FRAMES itself; a short utterance keeps its true length
    (so no output frame and an empty transcript), and its batch-mates' results do not change."""
    model = small().eval()
    x = torch.randn(2, 81, 40)
    with torch.no_grad():
        short, short_lengths = model(x[:, :, :20], torch.tensor([20, 12]))
        padded, _ = model(torch.nn.functional.pad(x[:, :, :20], (0, 11)), torch.tensor([20, 12]))
    assert short_lengths.tolist() == [0, 0] and short.shape[0] == 1
    assert torch.equal(short, padded)


def test_bidirectional_layer_is_sum_of_torch_directions():
    torch.manual_seed(2)
    layer = BatchRNN("gru", 6, 8, bidirectional=True, dtype=torch.float32)
    torch_gru = nn.GRU(6, 8, bidirectional=True)
    with torch.no_grad():
        for name, value in layer.fwd.named_parameters():
            getattr(torch_gru, name).copy_(value)
        for name, value in layer.bwd.named_parameters():
            getattr(torch_gru, name + "_reverse").copy_(value)
    x = torch.randn(11, 3, 6)
    lengths = torch.full((3,), 11)
    with torch.no_grad():
        ours = layer(x, lengths, torch.ones(11, 3, 1))
        both = torch_gru(x)[0]
    assert count(layer) == count(torch_gru)
    assert torch.allclose(ours, both[..., :8] + both[..., 8:], atol=1e-5)


def test_backward_runs_and_reaches_every_parameter():
    model = small().train()
    log_probs, _ = model(torch.randn(2, 81, 50), torch.tensor([50, 40]))
    log_probs.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_bf16_model_computes_its_recurrent_layers_in_bf16_and_keeps_float32_weights():
    model = small(precision="bf16").train()
    seen = []
    for rnn in model.rnns:
        rnn.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    log_probs, _ = model(torch.randn(2, 81, 50), torch.tensor([50, 40]))
    log_probs.sum().backward()
    assert seen == [torch.bfloat16, torch.bfloat16]
    assert log_probs.dtype == torch.float32 and torch.isfinite(log_probs).all()
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
    # Close to the same weights in fp32 (bf16 keeps 8 mantissa bits).
    reference = small(precision="fp32").eval()
    reference.load_state_dict(model.state_dict())
    x, lengths = torch.randn(2, 81, 50), torch.tensor([50, 40])
    with torch.no_grad():
        difference = reference(x, lengths)[0] - model.eval()(x, lengths)[0]
    assert difference.abs().max() < 0.1


@pytest.mark.parametrize("name, dtype", [("fp32", "float32"), ("bf16", "bfloat16")])
def test_precision_probe_on_cpu_reports_the_dtype_and_the_native_kernel(name, dtype):
    found = probe_recurrent(params.make({"precision": name, "preset": "tiny"}), torch.device("cpu"))
    assert found == precision.RecurrentKernel(dtype, "native", "cpu")


def test_precision_probe_refuses_fp16_on_cpu():
    with pytest.raises(precision.PrecisionError, match="precision='fp16': needs CUDA"):
        probe_recurrent(params.make({"precision": "fp16"}), torch.device("cpu"))


def test_precision_probe_names_the_cause_when_the_device_cannot(monkeypatch):
    def refuse(rnn, x, dtype):
        raise RuntimeError("cudnn RNN backward can only be called in training mode\nmore detail")

    monkeypatch.setattr(precision, "run_recurrent", refuse)
    with pytest.raises(precision.PrecisionError, match=r"precision='bf16': this cpu build .* cannot run a GRU in "):
        probe_recurrent(params.make({"precision": "bf16"}), torch.device("cpu"))


def test_the_kernel_is_read_off_the_outputs_autograd_node_not_its_dtype():
    gru = nn.GRU(4, 4)
    out = precision.run_recurrent(gru, torch.randn(3, 2, 4), torch.bfloat16)
    assert out.dtype == torch.bfloat16 and precision.kernel_of(out) == "native"  # the per-time-step loop on CPU

    class CudnnNode:  # what cuDNN's output carries on a GPU
        def name(self):
            return "CudnnRnnBackward0"

    class Output:
        grad_fn = CudnnNode()

    assert precision.kernel_of(Output()) == "cudnn"
    with torch.no_grad(), pytest.raises(ValueError, match="no grad_fn"):
        precision.kernel_of(gru(torch.randn(3, 2, 4))[0])


@pytest.mark.parametrize(
    "dtype, compiled, capability, enabled, kernel",
    [
        (torch.bfloat16, (9, 10, 2), (9, 0), True, "native"),  # PyTorch's CUDA 12.6 wheels
        (torch.bfloat16, (9, 13, 0), (9, 0), True, "cudnn"),
        (torch.bfloat16, (9, 20, 0), (7, 5), True, "native"),  # a T4: cuDNN takes no bf16 RNN before sm 8.0
        (torch.float16, (9, 10, 2), (7, 5), True, "cudnn"),
        (torch.float32, (9, 10, 2), (9, 0), False, "native"),  # torch.backends.cudnn.enabled = False
        (torch.float32, None, (9, 0), True, "native"),
    ],
)
def test_the_expected_cuda_kernel_follows_the_compiled_cudnn(dtype, compiled, capability, enabled, kernel):
    assert precision.expected_cuda_kernel(dtype, compiled, capability, enabled) == kernel


def test_a_cuda_run_on_the_native_fallback_is_refused_unless_allowed():
    fallback = precision.RecurrentKernel("bfloat16", "native", "cuda")
    versions = {"compiled": (9, 10, 2), "runtime": (9, 24, 0)}
    with pytest.raises(precision.PrecisionError) as err:
        precision.require_fast_kernel("bf16", fallback, False, versions, (9, 0))
    message = str(err.value)
    assert "compiled against cuDNN 9.10.2 (runtime 9.24.0)" in message and "sm 9.0" in message
    assert all(way in message for way in ("precision=fp16", "precision=fp32", "allow_native_rnn=true"))
    precision.require_fast_kernel("bf16", fallback, True, versions, (9, 0))  # allowed: no error
    on_cudnn, on_cpu = (
        precision.RecurrentKernel("bfloat16", "cudnn", "cuda"),
        precision.RecurrentKernel("bfloat16", "native", "cpu"),
    )
    precision.require_fast_kernel("bf16", on_cudnn, False, versions, (9, 0))
    precision.require_fast_kernel("bf16", on_cpu, False, {}, None)  # a CPU has only the one kernel


def test_cudnn_versions_are_none_without_cudnn():
    versions = precision.cudnn_versions()
    if getattr(torch._C, "_cudnn", None) is None:
        assert versions == {"compiled": None, "runtime": None}
    else:
        assert len(versions["compiled"]) == 3


def _synced_half(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """One of two gloo processes: masked_batch_norm(sync=True) on its half of the batch."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        x, mask, weights = torch.load(f"{out_dir}/inputs.pt")
        half = x.shape[0] // world
        part = slice(rank * half, (rank + 1) * half)
        bn = nn.BatchNorm2d(x.shape[1]).train()
        x = x[part].clone().requires_grad_(True)
        y = masked_batch_norm(bn, x, mask[part], sync=True)
        (y * weights[part]).sum().backward()
        torch.save((y.detach(), x.grad, bn.weight.grad, bn.running_mean, bn.running_var), f"{out_dir}/rank{rank}.pt")
        dist.barrier()  # neither process tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()


def test_synchronised_batch_norm_equals_one_process_on_the_whole_batch(tmp_path):
    """Two processes with synced, masked statistics give the outputs, input gradients, summed weight
    gradients and running statistics of one process normalising the whole batch."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 9)
    mask = (torch.arange(9)[None, :] < torch.tensor([9, 4, 7, 2])[:, None]).float()[:, None, None, :]
    weights = torch.randn(4, 3, 5, 9)
    torch.save((x, mask, weights), tmp_path / "inputs.pt")
    torch.multiprocessing.spawn(_synced_half, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)

    bn = nn.BatchNorm2d(3).train()
    whole = x.clone().requires_grad_(True)
    y = masked_batch_norm(bn, whole, mask)
    (y * weights).sum().backward()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    valid = mask.expand_as(y).bool()
    got_y = torch.cat([r[0] for r in ranks])
    assert torch.allclose(got_y[valid], y.detach()[valid], atol=1e-5)
    assert torch.allclose(torch.cat([r[1] for r in ranks]), whole.grad, atol=1e-5)
    assert torch.allclose(ranks[0][2] + ranks[1][2], bn.weight.grad, atol=1e-4)
    for r in ranks:
        assert torch.allclose(r[3], bn.running_mean, atol=1e-6) and torch.allclose(r[4], bn.running_var, atol=1e-6)


def test_batch_without_valid_frames_leaves_running_statistics_alone():
    bn = nn.BatchNorm2d(2).train()
    masked_batch_norm(bn, torch.randn(2, 2, 3, 4), torch.zeros(2, 1, 1, 4))
    assert torch.equal(bn.running_mean, torch.zeros(2)) and torch.equal(bn.running_var, torch.ones(2))
