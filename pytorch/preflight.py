"""Every check that can refuse a training run, in one function, run before the clock starts.

`check_run` is what ./run_and_time.sh calls before it prints STARTING TIMING RUN, and what the
trainer calls first (every rank, on its own device): the parameters the model cannot take, the
precision against the device (the recurrent kernel too), the prepared data, the results directory
and the checkpoint a --resume continues. A refusal is one error naming the parameter, file or
directory: exit status 2 for parameters and precision, 1 for data and directories.
"""

from dataclasses import dataclass

import torch

import params
from data.dataset_dir import DatasetDir
from data.normalization import split_stats
from exit_status import ExitStatus, Failure
from pytorch import checkpoint, loader, precision, results
from pytorch.distributed import World
from pytorch.model import DeepSpeech2, conv_frequencies, probe_recurrent
from pytorch.options import RunOptions


@dataclass(frozen=True)
class Checked:
    """What the checks found that the run then uses."""

    recurrent: precision.RecurrentKernel  # what the recurrent layers compute in on this device, and how
    resume_from: dict | None  # the checkpoint a --resume continues (pytorch.checkpoint.load_resume)


def check_trainable(p: params.Params) -> None:
    """ParamError for what params.py accepts but the model cannot take.

    (Preparing, say, 13 MFCCs is fine; the reference's convolutions cannot take them.)
    """
    try:
        conv_frequencies(p.n_features)
    except ValueError as err:
        knob = f"n_mfcc={p.n_mfcc}" if p.feature == "mfcc" else f"window_size={p.window_size}"
        raise params.ParamError(f"{knob}: {err}") from None


def check_device(p: params.Params, device: torch.device) -> precision.RecurrentKernel:
    """The precision on this device: PrecisionError for fp16 without CUDA, and for a CUDA run whose
    recurrent layers would fall back from cuDNN to ATen's slow loop (unless allow_native_rnn)."""
    precision.set_fp32_math(p.fp32_math)  # the probe runs as the run will
    found = probe_recurrent(p, device)
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    precision.require_fast_kernel(p.precision, found, p.allow_native_rnn, precision.cudnn_versions(), capability)
    return found


def check_data(data_dir, p: params.Params) -> None:
    """The prepared dataset: not being downloaded or prepared right now (its lock; the run takes it
    again for good), its features made with p's feature knobs, its two manifests there, and for
    normalization=global the training set's feature statistics."""
    if not data_dir.is_dir():
        raise Failure(f"--data-dir {data_dir}: no such directory; prepare the data first with ./download_dataset.sh")
    with DatasetDir(data_dir).lock("a training run's checks", shared=True):
        loader.check_features(data_dir, p)
        for name in (p.train_manifest, p.val_manifest):
            loader.manifest_path(data_dir, name)
        if p.normalization == "global":  # the training set's statistics, recorded at preparation
            split_stats(data_dir, p.train_manifest)


def check_run(run: RunOptions, device: torch.device, main: bool = True) -> Checked:
    """All of the above for one run; `main` (one process per run: the launcher, or rank 0) creates the
    results directory. A dry run checks no data here (pytorch.train checks it where there is some)."""
    p = run.params
    check_trainable(p)
    recurrent = check_device(p, device)
    if run.dry_run:
        return Checked(recurrent, None)
    check_data(run.data_dir, p)
    results.prepare_dir(run.results_dir, run.resume or run.restart > 0, create=main)
    if main:
        checkpoint.remove_stale_temporaries(checkpoint.checkpoint_dir(run.results_dir))  # a killed run's
    # An elastic restart continues from the last checkpoint if the run wrote one, else from the start.
    resume = run.resume or (run.restart > 0 and checkpoint.last_path(run.results_dir).is_file())
    return Checked(recurrent, checkpoint.load_resume(run.results_dir, p) if resume else None)


def dry_run(run: RunOptions, world: World, checked: Checked) -> ExitStatus:
    """--dry-run: print the model and what it computes in; check the data only where there is some."""
    p, found = run.params, checked.recurrent
    model = DeepSpeech2(p)
    world.say(model)
    world.say(f"Number of parameters: {sum(t.numel() for t in model.parameters()):,}")
    world.say(
        f"Device: {world.device}, world size {world.size}; precision {p.precision}: recurrent layers compute in "
        f"{found.dtype} on the {found.kernel} kernel, fp32 math {p.fp32_math}"
    )
    if not run.data_dir.exists():
        world.say(f"No prepared dataset at {run.data_dir}: data not checked (./download_dataset.sh prepares it).")
    else:
        check_data(run.data_dir, p)
        n_train = len(loader.open_training_split(run.data_dir, p))
        n_val = len(loader.open_split(run.data_dir, p.val_manifest))
        world.say(f"Training utterances: {n_train:,} ({p.train_manifest}); validation utterances: {n_val:,}")
    world.say("Dry run: not training.")
    return ExitStatus.OK
