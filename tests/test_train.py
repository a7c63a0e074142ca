"""The training loop on CPU with a tiny model and a tiny prepared dataset (tests/trainer_fixtures.py).

CPU only, on purpose: several tests compare runs for exact equality, which holds on the CPU alone (on
CUDA, CTC's backward accumulates with atomics). tests/test_cuda.py covers the GPU."""

import copy
import json
import math
from dataclasses import dataclass

import pytest
import torch
from torch.nn import functional as F

import params
from data.dataset_dir import DatasetDir
from exit_status import ExitStatus
from pytorch import checkpoint, distributed, inference, loader, train
from tests import trainer_fixtures

TINY = ["preset=tiny"]
# Learns the fixture within an epoch (WER under 100), not to WER 0 in 3. A per-epoch schedule, so that
# a run cut short by epochs=1 and resumed with epochs=3 follows the same learning rates as one of 3 epochs.
LEARNS = TINY + ["optimizer=adamw", "lr=3e-3", "lr_schedule=anneal"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return trainer_fixtures.write_dataset(tmp_path_factory.mktemp("data"))


def run(data_dir, results_dir, *overrides, flags=()):
    # --device cpu, not the default auto (which picks a GPU where there is one): the exact-equality
    # tests below need the CPU's determinism; tests/test_cuda.py runs the trainer on CUDA.
    words = ["--data-dir", str(data_dir), "--results-dir", str(results_dir), "--device", "cpu"]
    return train.main([*words, *flags, *overrides])


def metrics_of(results_dir) -> list[dict]:
    return [json.loads(line) for line in (results_dir / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- the loss


def test_ctc_loss_matches_alignments_enumerated_by_hand():
    # Two utterances, classes {blank, a, b}. Utterance 0: T=2, label "a": alignments aa, a_, _a.
    # Utterance 1: T=3, label "aa": the repeat needs a blank between, so a_a is the only alignment.
    probs = torch.tensor(
        [
            [[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]],
            [[0.6, 0.3, 0.1], [0.5, 0.4, 0.1]],
            [[0.3, 0.3, 0.4], [0.2, 0.7, 0.1]],
        ]
    )  # fmt: skip  (T=3, N=2, C=3)
    p0 = probs[:, 0]
    expected0 = -math.log(p0[0, 1] * p0[1, 1] + p0[0, 1] * p0[1, 0] + p0[0, 0] * p0[1, 1])
    p1 = probs[:, 1]
    expected1 = -math.log(p1[0, 1] * p1[1, 0] * p1[2, 1])
    loss = train.ctc_loss(probs.log(), torch.tensor([2, 3]), torch.tensor([1, 1, 1]), torch.tensor([1, 2]))
    assert loss.item() == pytest.approx(expected0 + expected1, rel=1e-5)


def test_min_frames_counts_a_blank_between_repeated_labels():
    frames = [loader.min_ctc_frames(torch.tensor(t)) for t in ([1, 1], [1, 2], [3, 3, 3, 4])]
    assert frames == [3, 2, 6]


def test_learning_rate_schedules():
    anneal = params.make({"lr": 1.0, "lr_schedule": "anneal", "learning_anneal": 2.0})
    assert [train.learning_rate(anneal, e, 0, 10) for e in range(3)] == [1.0, 0.5, 0.25]
    cycle = params.make({"lr": 1.0, "lr_schedule": "onecycle", "warmup_fraction": 0.2})
    lrs = [train.learning_rate(cycle, 0, s, 10) for s in range(10)]
    assert lrs[:2] == [0.5, 1.0] and lrs[2] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:])) and lrs[-1] < 0.05


# ---------------------------------------------------------------- one step


def micro_batches_of(data_dir, indices):
    split = loader.open_split(data_dir, "train")
    return [loader.collate([split.dataset[(i, 0)] for i in part], training=True) for part in indices]


def trainer_of(p, optimizer=None) -> train.Trainer:
    """A one-process CPU trainer of p, with its own optimiser unless one is given."""
    trainer = train.build_trainer(p, distributed.single("cpu"), total_steps=10)
    if optimizer is not None:
        trainer.optimizer = optimizer(trainer.model)
    return trainer


def untouched(model, before) -> bool:
    # num_batches_tracked counts forwards; it is not state that changes a result.
    return all(torch.equal(t, before[n]) for n, t in model.state_dict().items() if "num_batches" not in n)


def test_accumulated_step_follows_the_mean_loss_of_the_global_batch(data_dir):
    p = params.parse(TINY + ["batch_size=8", "gradient_accumulation_steps=2", "max_norm=0", "momentum=0", "lr=1"])
    trainer = trainer_of(p, optimizer=lambda model: torch.optim.SGD(model.parameters(), lr=1.0))
    model = trainer.model
    reference, start = copy.deepcopy(model), copy.deepcopy(model)
    batches = micro_batches_of(data_dir, [[0, 1, 2, 3], [4, 5, 6, 7]])
    before = [t.detach().clone() for t in model.parameters()]
    result = train.train_step(trainer, batches, 8)
    assert not result.skipped and result.dropped == 0
    # By hand: per-utterance CTC of both halves, summed, over the 8 utterances of the global batch.
    reference.train()
    total = 0.0
    for batch in batches:
        log_probs, out_lengths = reference(batch.features, batch.lengths)
        per_utt = F.ctc_loss(log_probs, batch.targets, out_lengths, batch.target_lengths, reduction="none")
        (per_utt.sum() / 8).backward()
        total += per_utt.sum().item()
    assert result.loss_sum == pytest.approx(total, rel=1e-5)
    for old, new, ref in zip(before, model.parameters(), reference.parameters()):
        torch.testing.assert_close(old - new.detach(), ref.grad, rtol=1e-4, atol=1e-6)  # SGD lr 1: step = -grad
    # BatchNorm statistics: the mean of what each micro-batch alone would have made of them.
    alone = [copy.deepcopy(start) for _ in batches]
    for copy_, batch in zip(alone, batches):
        copy_.train()
        copy_(batch.features, batch.lengths)
    for name, tensor in model.named_buffers():
        if name.endswith(("running_mean", "running_var")):
            mean = sum(dict(c.named_buffers())[name] for c in alone) / len(alone)
            torch.testing.assert_close(tensor, mean, rtol=1e-5, atol=1e-7)


def test_non_finite_loss_skips_the_step_without_touching_weights(data_dir, monkeypatch):
    trainer = trainer_of(params.parse(TINY))
    model = trainer.model
    before = copy.deepcopy(model.state_dict())
    real_loss = train.ctc_loss
    monkeypatch.setattr(train, "ctc_loss", lambda *a: real_loss(*a) * float("inf"))
    batches = micro_batches_of(data_dir, [[0, 1], [2, 3]])
    result = train.train_step(trainer, batches, 4)
    assert result.skipped
    assert all(t.grad is None for t in model.parameters())
    assert untouched(model, before) and not trainer.optimizer.state
    monkeypatch.setattr(train, "ctc_loss", real_loss)
    assert not train.train_step(trainer, batches, 4).skipped
    assert not torch.equal(model.state_dict()["fc.1.weight"], before["fc.1.weight"])


def test_non_finite_gradient_of_a_finite_loss_skips_the_step(data_dir, monkeypatch):
    """A finite loss whose backward yields an inf gradient must not reach the weights or optimiser."""
    trainer = trainer_of(params.parse(TINY + ["max_norm=0"]))
    before = copy.deepcopy(trainer.model.state_dict())

    class InfGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            return grad * float("inf")

    real_loss = train.ctc_loss
    monkeypatch.setattr(train, "ctc_loss", lambda log_probs, *a: real_loss(InfGradient.apply(log_probs), *a))
    result = train.train_step(trainer, micro_batches_of(data_dir, [[0, 1, 2, 3]]), 4)
    assert result.skipped and math.isfinite(result.loss_sum)
    assert not trainer.optimizer.state  # no moment estimates were made from the bad gradients
    assert untouched(trainer.model, before)


def test_global_batch_without_an_alignable_utterance_is_a_skipped_step(data_dir, monkeypatch):
    """Every utterance dropped: no optimiser step (SGD momentum would otherwise move the weights)."""
    trainer = trainer_of(params.parse(TINY + ["optimizer=sgd", "lr=0.1"]))
    before = copy.deepcopy(trainer.model.state_dict())
    monkeypatch.setattr(loader, "min_ctc_frames", lambda labels: 10**6)
    batches = micro_batches_of(data_dir, [[0, 1], [2, 3]])
    assert [len(b) for b in batches] == [0, 0] and [b.dropped for b in batches] == [2, 2]
    result = train.train_step(trainer, batches, 4)
    assert result.skipped and result.dropped == 4
    assert untouched(trainer.model, before)


def test_an_empty_micro_batch_of_one_rank_takes_part_without_effect(data_dir):
    """Several ranks: a rank whose share of a short tail batch is empty still runs a forward and
    backward (DDP and synchronised BatchNorm need every rank), and it changes nothing."""
    p = params.parse(TINY)
    trainer = trainer_of(p)
    before = copy.deepcopy(trainer.model.state_dict())
    loss = train.micro_batch_loss(trainer.model, loader.Batch.empty(), p, torch.device("cpu"))
    loss.backward()
    assert loss.item() == 0.0
    assert all(t.grad is not None and not t.grad.any() for t in trainer.model.parameters())
    trainer.model.zero_grad()
    assert untouched(trainer.model, before)


def test_skipped_steps_are_counted_in_the_metrics(data_dir, tmp_path, monkeypatch):
    calls = []
    real_loss = train.ctc_loss

    def inf_on_first_call(*args):
        calls.append(1)
        return real_loss(*args) * (float("inf") if len(calls) == 1 else 1.0)

    monkeypatch.setattr(train, "ctc_loss", inf_on_first_call)
    run(data_dir, tmp_path / "r", *TINY, "epochs=1", "target_wer=0")
    (row,) = metrics_of(tmp_path / "r")
    assert row["skipped_steps"] == 1 and math.isfinite(row["train_loss"])


def test_utterance_shorter_than_its_transcript_is_dropped_and_counted(tmp_path, capsys):
    data = trainer_fixtures.write_dataset(tmp_path / "data")
    # 40 frames -> 5 output frames, too few for 8 labels: CTC would be infinite.
    short = {
        "id": "100-9-0000",
        "subset": "train-clean-100",
        "duration": 0.39,
        "frames": 40,
        "transcript": "ABABABAB",
        "audio": "x.flac",
        "features": "features/train-clean-100/100-5.npy",
        "offset": 0,
    }
    trainer_fixtures.add_row(data, "train", short)
    assert run(data, tmp_path / "r", *TINY, "epochs=2", "target_wer=0") == ExitStatus.TARGET_MISSED
    rows = metrics_of(tmp_path / "r")
    assert [r["dropped_utterances"] for r in rows] == [1, 1]
    assert [r["skipped_steps"] for r in rows] == [0, 0]
    assert all(math.isfinite(r["train_loss"]) for r in rows)
    assert "1 dropped utterances" in capsys.readouterr().out


# ---------------------------------------------------------------- the run


def test_bad_parameters_exit_2_before_any_work(tmp_path, capsys):
    for words, message in [
        (["lr=-1"], "lr=-1.0"),
        (["hiden_size=3"], "did you mean 'hidden_size'"),
        (["precision=fp16"], "precision='fp16'"),
        (["feature=mfcc"], "n_mfcc=13: n_features=13: too few feature bins"),
    ]:
        assert run(tmp_path / "no-data", tmp_path / "r", *words) == ExitStatus.USAGE
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err
    assert not (tmp_path / "r").exists()


def test_missing_data_is_an_error_naming_the_file(tmp_path, capsys):
    assert run(tmp_path / "no-data", tmp_path / "r", *TINY) == ExitStatus.ERROR
    assert "no-data: no such directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run(tmp_path / "empty", tmp_path / "r", *TINY) == ExitStatus.ERROR
    assert "features.json" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before the results directory was made


@dataclass
class FakeCounts:
    wer: float
    wer_per_utterance_mean: float = 0.0
    cer: float = 0.0


@pytest.mark.parametrize(
    "wers, epochs, status",
    [
        ([50.0, 20.0, 10.0], 3, "success"),  # stops at the first WER <= 23
        ([50.0, 23.0], 3, "success"),  # at the target counts
        ([50.0, 40.0], 2, "aborted"),  # all epochs, target never met
    ],
)
def test_stop_rule(data_dir, tmp_path, monkeypatch, wers, epochs, status):
    scripted = iter(wers)
    monkeypatch.setattr(inference, "evaluate", lambda *a: (FakeCounts(next(scripted)), []))
    expected = ExitStatus.OK if status == "success" else ExitStatus.TARGET_MISSED
    assert run(data_dir, tmp_path / "r", *TINY, f"epochs={epochs}", "target_wer=23") == expected
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    expected_epochs = next((i + 1 for i, w in enumerate(wers) if w <= 23), epochs)
    assert (result["status"], result["epochs"]) == (status, expected_epochs)
    assert result["final_wer"] == wers[expected_epochs - 1] and result["best_wer"] == min(wers[:expected_epochs])
    assert [m["epoch"] for m in metrics_of(tmp_path / "r")] == list(range(1, expected_epochs + 1))


def test_results_directory(data_dir, tmp_path):
    assert run(data_dir, tmp_path / "r", *LEARNS, "epochs=1", "target_wer=100") == ExitStatus.OK
    out = tmp_path / "r"
    (row,) = metrics_of(out)
    assert set(row) == {
        "epoch",
        "train_loss",
        "wer",
        "wer_per_utterance_mean",
        "cer",
        "lr",
        "seconds",
        "utt_per_s",
        "audio_s_per_s",
        "skipped_steps",
        "dropped_utterances",
    }
    assert row["utt_per_s"] > 0 and row["audio_s_per_s"] > 0 and row["seconds"] > 0
    predictions = [json.loads(line) for line in (out / "predictions" / "epoch_1.jsonl").read_text().splitlines()]
    assert len(predictions) == len(trainer_fixtures.VAL_TRANSCRIPTS)
    assert {p["reference"] for p in predictions} == set(trainer_fixtures.VAL_TRANSCRIPTS)
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "success" and result["time_to_train_s"] > 0 and result["params"]["optimizer"] == "adamw"
    assert result["final_wer"] == result["best_wer"] == row["wer"]
    assert json.loads((out / "params.json").read_text())["lr"] == 3e-3
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "checkpoints" / "last.pt").is_file() and (out / "checkpoints" / "best.pt").is_file()
    assert not list(out.rglob(".*tmp*"))
    # A second fresh run must not overwrite this one.
    assert run(data_dir, out, *LEARNS) == ExitStatus.ERROR


def test_tensorboard_holds_every_steps_and_every_epochs_scalars(data_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert run(data_dir, tmp_path / "r", *LEARNS, "epochs=2", "target_wer=0") == ExitStatus.TARGET_MISSED
    events = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    events.Reload()
    steps = 2 * len(loader.global_batches(24, 4, False, 1, 0))  # the fixture's 24 utterances in batches of 4
    metrics = metrics_of(tmp_path / "r")
    for tag in ("train/loss", "train/lr", "train/grad_norm", "train/utt_per_s"):
        assert [e.step for e in events.Scalars(tag)] == list(range(steps)), tag
    assert [e.value for e in events.Scalars("train/lr")][-1] == pytest.approx(metrics[-1]["lr"])
    assert all(e.value > 0 for e in events.Scalars("train/grad_norm") + events.Scalars("train/utt_per_s"))
    for tag, key in (("val/wer", "wer"), ("val/cer", "cer"), ("train/epoch_loss", "train_loss")):
        assert [e.value for e in events.Scalars(tag)] == pytest.approx([m[key] for m in metrics]), tag
        assert [e.step for e in events.Scalars(tag)] == [steps // 2, steps]


def test_run_stop_is_logged_before_the_checkpoint_is_written(data_dir, tmp_path, monkeypatch):
    """The clock stops when the target is met: saving the epoch is not timed."""
    log_at_save = []
    real_save = checkpoint.save

    def save(path, state):
        log_at_save.append((tmp_path / "r" / "mlperf_log.txt").read_text())
        real_save(path, state)

    monkeypatch.setattr(checkpoint, "save", save)
    assert run(data_dir, tmp_path / "r", *LEARNS, "epochs=1", "target_wer=100") == ExitStatus.OK
    assert len(log_at_save) == 1 and '"key": "run_stop"' in log_at_save[0]


@pytest.mark.parametrize("augmentation", ["off", "on"])
def test_resumed_run_equals_an_unbroken_run(data_dir, tmp_path, capsys, augmentation):
    missed = ExitStatus.TARGET_MISSED
    learns = LEARNS + [f"{knob}={augmentation == 'on'}" for knob in ("tempo_perturb", "gain_perturb", "spec_augment")]
    assert run(data_dir, tmp_path / "whole", *learns, "epochs=3", "target_wer=0") == missed
    assert run(data_dir, tmp_path / "split", *learns, "epochs=1", "target_wer=0") == missed
    assert run(data_dir, tmp_path / "split", *learns, "epochs=3", "target_wer=0", flags=["--resume"]) == missed
    keys = ("epoch", "train_loss", "wer", "wer_per_utterance_mean", "cer", "lr", "dropped_utterances")
    whole = [{k: m[k] for k in keys} for m in metrics_of(tmp_path / "whole")]
    split = [{k: m[k] for k in keys} for m in metrics_of(tmp_path / "split")]
    assert len(whole) == 3 and whole[0]["train_loss"] != whole[2]["train_loss"]
    assert split == whole
    assert json.loads((tmp_path / "split" / "result.json").read_text())["resumed"] == 1
    capsys.readouterr()
    log = (tmp_path / "split" / "mlperf_log.txt").read_text()
    # Another model cannot resume it; the error names the parameter, and the finished log is left alone.
    assert run(data_dir, tmp_path / "split", *learns, "hidden_size=8", flags=["--resume"]) == ExitStatus.ERROR
    assert "hidden_size=16 in checkpoint but 8 now" in capsys.readouterr().err
    # Nothing is left to resume in a finished run: said, and nothing is appended to its log.
    assert run(data_dir, tmp_path / "split", *learns, "epochs=3", "target_wer=0", flags=["--resume"]) == missed
    assert "already finished after 3 epochs" in capsys.readouterr().out
    assert (tmp_path / "split" / "mlperf_log.txt").read_text() == log


def test_training_shares_the_dataset_lock_with_readers_only(data_dir, tmp_path, capsys):
    """A download or preparation running on the dataset stops a training run before anything is
    made, naming itself; a verify (a reader) does not."""
    dataset = DatasetDir(data_dir)
    with dataset.lock("python -m data.prepare --force"):
        assert run(data_dir, tmp_path / "busy", *TINY, "epochs=1") == ExitStatus.ERROR
    assert "in use by another run: python -m data.prepare --force" in capsys.readouterr().err
    assert not (tmp_path / "busy").exists()
    with dataset.lock("verify_dataset.sh", shared=True):
        assert run(data_dir, tmp_path / "read", *TINY, "epochs=1") == ExitStatus.TARGET_MISSED  # it trained
    assert (tmp_path / "read" / "result.json").is_file()


def test_resume_without_a_checkpoint_is_an_error(data_dir, tmp_path, capsys):
    assert run(data_dir, tmp_path / "r", *TINY, flags=["--resume"]) == ExitStatus.ERROR
    assert "no checkpoint" in capsys.readouterr().err


def test_checkpoint_restores_every_random_generator():
    import random

    import numpy as np

    state = checkpoint.rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    checkpoint.set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and (expected[1] == again[1]).all() and expected[2] == again[2]


def test_bf16_trains_with_a_finite_loss_and_logs_its_recurrent_dtype_and_kernel(data_dir, tmp_path):
    status = run(data_dir, tmp_path / "r", *TINY, "precision=bf16", "epochs=1", "target_wer=0")
    assert status == ExitStatus.TARGET_MISSED
    (row,) = metrics_of(tmp_path / "r")
    assert math.isfinite(row["train_loss"]) and row["skipped_steps"] == 0
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    computed = {"precision": "bf16", "fp32_math": "ieee", "recurrent_dtype": "bfloat16", "recurrent_kernel": "native"}
    assert result["precision"] == computed
    log = (tmp_path / "r" / "mlperf_log.txt").read_text()
    assert '"key": "recurrent_dtype", "value": "bfloat16"' in log
    assert '"key": "recurrent_kernel", "value": "native"' in log


def test_gradient_accumulation_runs_the_micro_batch_path(data_dir, tmp_path):
    words = ["batch_size=8", "gradient_accumulation_steps=2", "epochs=1", "target_wer=0"]
    assert run(data_dir, tmp_path / "r", *TINY, *words) == ExitStatus.TARGET_MISSED
    (row,) = metrics_of(tmp_path / "r")
    assert math.isfinite(row["train_loss"]) and row["skipped_steps"] == 0


@pytest.mark.parametrize(
    "overrides, count",
    [([], "207,352,608"), (["bidirectional=False"], "103,841,568"), (["preset=reference2018"], "103,841,568")],
)
def test_dry_run_prints_the_full_model(tmp_path, capsys, overrides, count):
    data = trainer_fixtures.write_dataset(tmp_path / "data", params.make(), train_copies=1)
    assert train.main(["--dry-run", "--data-dir", str(data), "--device", "cpu", *overrides]) == ExitStatus.OK
    out = capsys.readouterr().out
    assert f"Number of parameters: {count}\n" in out
    assert "DeepSpeech2(" in out and "Training utterances: 12" in out and "validation utterances: 4" in out
    assert not (tmp_path / "results").exists()


def test_dry_run_needs_no_data(tmp_path, capsys):
    """A new user can look at the model and check parameters before the 60 GB download."""
    args = ["--dry-run", "--data-dir", str(tmp_path / "nothing"), "--device", "cpu", "precision=bf16"]
    assert train.main(args) == ExitStatus.OK
    out = capsys.readouterr().out
    assert "Number of parameters: 207,352,608" in out and "recurrent layers compute in bfloat16" in out
    assert f"No prepared dataset at {tmp_path / 'nothing'}: data not checked" in out


# ---------------------------------------------------------------- disks, checkpoints


def test_a_full_disk_while_saving_a_checkpoint_is_one_clear_error(data_dir, tmp_path, monkeypatch, capsys):
    """torch reports a failed write as 'RuntimeError: ... unexpected pos ...'; the user reads where and why."""

    def full_disk(state, path):
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                           "data/3: file write failed; unexpected pos 924623 vs 552896")  # fmt: skip

    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: type("U", (), {"free": 0})())
    assert run(data_dir, tmp_path / "r", *TINY, "epochs=1", "target_wer=0") == ExitStatus.ERROR
    err = capsys.readouterr().err
    assert "Traceback" not in err and "cannot write the checkpoint" in err and "no space left" in err
    assert str(tmp_path / "r" / "checkpoints" / "last.pt") in err
    assert not list((tmp_path / "r" / "checkpoints").glob(".*tmp*"))


def test_an_unwritable_results_directory_is_named(data_dir, tmp_path, monkeypatch, capsys):
    # Root ignores file modes, so the refusal is simulated where the trainer first writes.
    real_write_bytes = type(tmp_path).write_bytes

    def refuse(self, data):
        if self.name.startswith(".write-test"):
            raise PermissionError(13, "Permission denied", str(self))
        return real_write_bytes(self, data)

    monkeypatch.setattr(type(tmp_path), "write_bytes", refuse)
    (tmp_path / "r").mkdir()
    assert run(data_dir, tmp_path / "r", *TINY, "epochs=1") == ExitStatus.ERROR
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--results-dir" in err and "permission denied" in err


def test_a_killed_runs_half_written_checkpoint_is_cleaned_on_resume(data_dir, tmp_path):
    assert run(data_dir, tmp_path / "r", *LEARNS, "epochs=1", "target_wer=0") == ExitStatus.TARGET_MISSED
    stale = tmp_path / "r" / "checkpoints" / ".last.pt.tmp.12345"
    stale.write_bytes(b"half a checkpoint")
    assert run(data_dir, tmp_path / "r", *LEARNS, "epochs=2", "target_wer=0", flags=["--resume"]) == 3
    assert not stale.exists()


def test_a_foreign_checkpoint_never_suggests_loading_it_unsafely(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"format": checkpoint.FORMAT, "code": FakeCounts(1.0)}, path)  # needs pickled code to load
    with pytest.raises(checkpoint.CheckpointError) as err:
        checkpoint.load(path)
    assert str(path) in str(err.value) and "weights_only" not in str(err.value)


# ---------------------------------------------------------------- without matplotlib (an offline GPU machine)


def test_without_matplotlib_no_curves_are_drawn_and_training_still_succeeds(data_dir, tmp_path, monkeypatch):
    """The offline wheelhouse leaves matplotlib out: curves.png is skipped (plot_curves returns False,
    writes nothing), the run and its other results are unchanged, and no module of the training, demo
    or GPU-check path imports matplotlib at import time."""
    import subprocess
    import sys

    from pytorch import results

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    metrics = [results.EpochMetrics(1, 2.0, 50.0, 50.0, 20.0, 1e-3, 1.0, 10.0, 100.0, 0, 0)]
    assert results.plot_curves(tmp_path, metrics, 23.0) is False
    assert list(tmp_path.iterdir()) == []
    out = tmp_path / "r"
    assert run(data_dir, out, *LEARNS, "epochs=1", "target_wer=100") == ExitStatus.OK
    assert json.loads((out / "result.json").read_text())["status"] == "success"
    assert (out / "metrics.jsonl").is_file() and (out / "checkpoints" / "best.pt").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents.*")) and not (out / "curves.png").exists()
    assert not list(out.rglob(".*tmp*"))
    monkeypatch.undo()
    assert results.plot_curves(tmp_path, metrics, 23.0) is True  # with matplotlib: drawn
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"

    entry_points = "pytorch.train pytorch.run_and_time bench.gpu_check bench.epoch_time data.download data.verify"
    code = f"import sys; sys.modules['matplotlib'] = None\nimport {', '.join(entry_points.split())}, synthetic.corpus"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
