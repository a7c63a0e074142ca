"""One training run as its command line asks for it: what the entry points hand the trainer.

`python -m pytorch.train` and `./run_and_time.sh` (pytorch.run_and_time) parse their own command
lines into a RunOptions; below them nothing sees argparse. The parameters are parsed (and range-
checked) here, so a bad one is a usage error before any work.
"""

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

import params
from data import dataset_dir
from pytorch import distributed


@dataclass(frozen=True)
class RunOptions:
    params: params.Params
    data_dir: Path
    results_dir: Path | None  # None only for a dry run
    resume: bool = False  # continue from results_dir/checkpoints/last.pt
    dry_run: bool = False  # check and print the model; no training
    device: str = "auto"  # auto (this rank's GPU, else the CPU), cpu, cuda or cuda:N
    dist_backend: str | None = None  # nccl | gloo; None: nccl between GPUs, gloo on CPU
    overrides: tuple[str, ...] = field(default=())  # the key=value words params came from
    restart: int = 0  # torchrun's elastic restarts of this run so far (MAX_RESTARTS): it continues, clock too

    def trainer_argv(self) -> list[str]:
        """The `python -m pytorch.train` arguments of these options (for torchrun's workers)."""
        argv = ["--data-dir", str(self.data_dir), "--device", self.device]
        argv += ["--results-dir", str(self.results_dir)] if self.results_dir is not None else []
        argv += ["--resume"] * self.resume + ["--dry-run"] * self.dry_run
        argv += ["--dist-backend", self.dist_backend] if self.dist_backend else []
        return [*argv, *self.overrides]


def trainer_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pytorch.train",
        description="Train DeepSpeech2 on a prepared LibriSpeech dataset until the validation WER "
        "reaches target_wer. Exit status: 0 target reached, 3 every epoch run without reaching it, "
        "1 error, 2 bad parameters (under torchrun a completed run exits 0; see result.json).",
        epilog="Parameters (key=value), defaults from params.py:\n" + params.describe(params.make()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dataset_dir.add_data_dir_argument(parser)
    parser.add_argument(
        "--results-dir",
        type=Path,
        help="where logs, metrics, predictions and checkpoints go (required unless --dry-run)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from RESULTS_DIR/checkpoints/last.pt")
    parser.add_argument(
        "--dry-run", action="store_true", help="check the parameters (and the data, if there), print the model"
    )
    parser.add_argument("--device", default="auto", help="auto (this rank's GPU, else the CPU), cpu, cuda or cuda:N")
    parser.add_argument(
        "--dist-backend",
        choices=distributed.BACKENDS,
        help="nccl (default between GPUs) or gloo (CPU; two ranks on one GPU)",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="parameter overrides, e.g. preset=demo lr=3e-4"
    )
    return parser


def parse_trainer_args(argv: list[str] | None) -> RunOptions:
    """`python -m pytorch.train`'s command line -> RunOptions (ParamError for a bad parameter)."""
    parser = trainer_parser()
    args = parser.parse_intermixed_args(argv)
    if args.results_dir is None and not args.dry_run:
        parser.error("--results-dir is required (unless --dry-run)")
    return RunOptions(
        params.parse(args.overrides),
        args.data_dir,
        args.results_dir,
        args.resume,
        args.dry_run,
        args.device,
        args.dist_backend,
        tuple(args.overrides),
        int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or "0"),
    )
