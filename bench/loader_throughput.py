"""Training DataLoader throughput with augmentation off and on, against what the trainer consumes.

The trainer's own loader (pytorch.loader.make_loader, training=True: features, augmentation,
normalisation, padding, CTC-alignability) over a prepared dataset, whole epochs (each with its
own draws) for at least --seconds per configuration:
  off             no augmentation
  tempo+gain      the 2018 reference's augmentation (pytorch.augment)
  +SpecAugment    tempo, gain and SpecAugment's masks
for each --workers count. Printed: utterances/s and audio-s/s (stored durations), and the ratio
against the trainer's consumption: the GPU ESTIMATE of bench.cost_model for the default recipe on 8
H100s (3.7 min per LibriSpeech epoch: about 158 utt/s per rank of 12.1 s, about 1,900 audio-s/s;
compared in audio-s/s, which the loader's cost follows), and with --measure-trainer the training step
of these parameters measured here (pytorch.train.train_step on a synthetic batch of the dataset's
mean duration, as bench.train_step).
Goal: the loader at least 10x the trainer.

Without --data-dir, a dataset of --utterances espeak-ng utterances (synthetic.corpus, prepared by
data.prepare with these feature parameters) is built once under --work-dir and reused.

    python -m bench.loader_throughput preset=demo --measure-trainer    # 81 bins, vs the demo on this CPU
    python -m bench.loader_throughput                                  # 161 bins, vs the GPU estimate
"""

import argparse
import dataclasses
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

import exit_status
import params
from bench import cost_model
from bench.epoch_time import librispeech_durations, trained_durations
from data.dataset_dir import DatasetDir
from pytorch import loader
from pytorch.augment import Augmentation

SUBSET = "train-clean-100"
CONFIGS = {
    "off": dict(tempo_perturb=False, gain_perturb=False, spec_augment=False),
    "tempo+gain": dict(tempo_perturb=True, gain_perturb=True, spec_augment=False),
    "+SpecAugment": dict(tempo_perturb=True, gain_perturb=True, spec_augment=True),
}
GPU_RANKS = 8  # one node of 8 H100s
GOAL = 10.0


def gpu_consumption_estimate() -> tuple[float, float, float]:
    """(utt/s, mean utterance s, audio-s/s) one GPU rank consumes on the default recipe: the
    bench.cost_model ESTIMATE for 8 H100s (not measured) over its LibriSpeech-shaped epoch."""
    p = params.make()
    durations = librispeech_durations()
    kept = trained_durations(durations, p)
    epoch_s = cost_model.estimate(p, durations, GPU_RANKS)["epoch_s"]
    utt_per_s = len(kept) / epoch_s / GPU_RANKS
    return utt_per_s, float(kept.mean()), utt_per_s * float(kept.mean())


def build_dataset(work_dir: Path, utterances: int, p: params.Params, jobs: int) -> Path:
    """work_dir/dataset: `utterances` espeak-ng training utterances prepared with p's features (reused)."""
    from data.prepare import prepare
    from synthetic import corpus

    dataset = DatasetDir(work_dir / "dataset")
    if dataset.is_marked("prepare", SUBSET):
        return dataset.root
    (archive,) = corpus.synthesize(work_dir / "corpus", {SUBSET: utterances}, seed=1, jobs=jobs)
    with tarfile.open(archive) as tar:
        tar.extractall(dataset.root, filter="data")
    dataset.mark("extract", SUBSET)
    prepare(dataset.root, [SUBSET], p, jobs)
    return dataset.root


def loader_rate(split: loader.Split, p: params.Params, batch_size: int, workers: int, least_s: float):
    """(utterances/s, audio-s/s, audio-s per CPU-s of this process) of the training loader over whole
    epochs (each with its own draws) until least_s seconds have passed, after a warm-up that starts
    the workers. The CPU figure counts all the work only with workers=0, and holds on a busy machine."""
    data = loader.make_loader(split.dataset, [], workers, pin_memory=False, training=True)
    data.batch_sampler.set(loader.global_batches(len(split), batch_size, True, p.seed, 0)[:2], epoch=0)
    for _ in data:
        pass
    utterances, audio_s, epoch = 0, 0.0, 1
    start, cpu_start = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < least_s:
        data.batch_sampler.set(loader.global_batches(len(split), batch_size, True, p.seed, epoch), epoch)
        utterances += sum(len(batch) + batch.dropped for batch in data)
        audio_s += float(split.manifest.duration.sum())
        epoch += 1
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return utterances / seconds, audio_s / seconds, audio_s / cpu_seconds


def trainer_rate(p: params.Params, utt_seconds: float, steps: int) -> float:
    """Utterances/s of p's training step on this machine (bench.train_step's timing), median step."""
    from bench.train_step import time_steps

    times = time_steps(p, utt_seconds, steps, budget_s=120.0)
    return p.batch_size / sorted(times)[len(times) // 2]


def run(args) -> None:
    p = params.parse(args.overrides)
    torch.set_num_threads(1)  # workers=0 measures one core, as each worker process has
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        data_dir = args.data_dir or build_dataset(work / f"bins{p.n_features}", args.utterances, p, args.jobs)
        loader.check_features(data_dir, p)
        print_table(data_dir, p, args)


def print_table(data_dir: Path, p: params.Params, args) -> None:
    split = loader.open_split(data_dir, p.train_manifest)
    mean_s = float(split.manifest.duration.mean())
    print(
        f"dataset: {data_dir} ({p.train_manifest}): {len(split):,} utterances, mean {mean_s:.2f} s, "
        f"{p.n_features} bins; batches of {args.batch_size}; {time.strftime('%Y-%m-%d')}"
    )
    trainer = trainer_rate(p, mean_s, args.trainer_steps) if args.measure_trainer else None
    if trainer:
        print(f"trainer, measured here: {trainer:.1f} utt/s ({p.batch_size} x {mean_s:.2f} s per step)")
    gpu_utt_s, gpu_mean_s, gpu_audio_s = gpu_consumption_estimate()
    print(
        f"trainer, GPU ESTIMATE (bench.cost_model, the default recipe, one rank of {GPU_RANKS} H100s): "
        f"{gpu_utt_s:.0f} utt/s of {gpu_mean_s:.1f} s = {gpu_audio_s:,.0f} audio-s/s"
    )
    header = "| augmentation | workers | utt/s | audio-s/s | audio-s per CPU-s | x GPU rank (estimate, audio-s/s) |"
    header += " x trainer here (utt/s) |" if trainer else ""
    print("\n" + header + "\n|" + "---|" * (header.count("|") - 1))
    for name, knobs in CONFIGS.items():
        augmentation = Augmentation.from_params(dataclasses.replace(p, **knobs))
        augmented = loader.open_split(data_dir, p.train_manifest, augmentation=augmentation)
        for workers in args.workers:
            utt_s, audio_s, per_cpu_s = loader_rate(augmented, p, args.batch_size, workers, args.seconds)
            cpu = f"{per_cpu_s:,.0f}" if workers == 0 else "-"
            vs_gpu = audio_s / gpu_audio_s
            row = f"| {name} | {workers} | {utt_s:,.0f} | {audio_s:,.0f} | {cpu} | {vs_gpu:.1f} |"
            row += f" {utt_s / trainer:.1f} |" if trainer else ""
            print(row, flush=True)
    print(
        f"goal: at least {GOAL:g}x what the trainer consumes; a GPU rank needs about {GOAL:g} x "
        f"{gpu_audio_s:,.0f} / (audio-s per CPU-s) worker cores for it"
    )


def worker_counts(text: str) -> list[int]:
    try:
        counts = [int(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated counts, e.g. 0,1,2") from None
    if any(c < 0 for c in counts):
        raise argparse.ArgumentTypeError(f"{text!r}: worker counts must be >= 0")
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loader_throughput",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", type=Path, help="a prepared dataset (default: build one under --work-dir)")
    parser.add_argument("--work-dir", type=Path, help="where the built dataset is kept (default: a temporary one)")
    parser.add_argument("--utterances", type=int, default=1500, help="utterances of the built dataset (%(default)s)")
    parser.add_argument("--jobs", type=int, default=2, help="processes to build it (default: %(default)s)")
    parser.add_argument("--workers", type=worker_counts, default=[0, 1, 2], help="DataLoader workers (0,1,2)")
    parser.add_argument("--batch-size", type=int, default=32, help="utterances per batch (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=5.0, help="least time per measurement (%(default)s)")
    parser.add_argument("--measure-trainer", action="store_true", help="also time these parameters' training step")
    parser.add_argument("--trainer-steps", type=int, default=4, help="timed training steps (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="parameters, e.g. preset=demo")
    args = parser.parse_intermixed_args(argv)
    if min(args.utterances, args.jobs, args.batch_size, args.trainer_steps) < 1 or args.seconds <= 0:
        parser.error("--utterances, --jobs, --batch-size and --trainer-steps must be >= 1, --seconds > 0")
    return exit_status.run(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
