"""Time one training run to the target WER, MLPerf style: the Python side of ./run_and_time.sh.

Checks the parameters and the data first (exit 2 or 1, no timing lines), then prints
    STARTING TIMING RUN AT <date>
    ... the trainer's output ...
    ENDING TIMING RUN AT <date>
    RESULT,SPEECH_RECOGNITION,<seed>,<seconds>,<user>,<start date>
as other MLPerf references do (seconds: wall time from before the trainer starts to after it ends).
One process runs the trainer here; NPROC > 1 or NNODES > 1 runs it under torchrun. Exit status
(exit_status.py): 0 target reached, 3 every epoch run without reaching it, 1 error, 2 bad usage.

This is the training loop's launcher, so it alone besides pytorch.train imports pytorch.train: every
check that can refuse the run (pytorch.preflight.check_run) runs before the clock starts, and one
process runs the trainer in this interpreter, so the timed run holds no second interpreter start and
torch import, and its exit status and Ctrl-C handling are the trainer's own. The inference side
(pytorch.inference, evaluate, transcribe, bench.inference_latency) never imports the training loop.
"""

import argparse
import getpass
import os
import subprocess
import sys
import time
from pathlib import Path

import exit_status
import params
from exit_status import ExitStatus, UsageError
from pytorch import distributed, loader, preflight, results, train
from pytorch.options import RunOptions

REPO = Path(__file__).resolve().parents[1]
BENCHMARK = "SPEECH_RECOGNITION"
USAGE = """\
Usage: ./run_and_time.sh [--data-dir DIR] [--results-dir DIR] [--resume] [--dry-run] [key=value ...]

Trains DeepSpeech2 until the validation WER reaches target_wer and prints, as other MLPerf references:
  STARTING TIMING RUN AT <date>
  ENDING TIMING RUN AT <date>
  RESULT,SPEECH_RECOGNITION,<seed>,<seconds>,<user>,<start date>
(seconds = wall time of the run). result.json in the results dir holds status and time to train.

  --data-dir DIR     prepared dataset (default: $DS2_DATA_DIR, else LibriSpeech_dataset in the repo)
  --results-dir DIR  logs, metrics, checkpoints (default: results/<date-time> in the repo)
  --resume           continue from DIR/checkpoints/last.pt (not a valid MLPerf timing)
  --dry-run          check the parameters (and the data, if there), print the model; no training
  key=value          parameter overrides, e.g. preset=demo lr=3e-4 (python -m pytorch.train --help)

Environment: NPROC (processes per node, default 1), NNODES (default 1), NODE_RANK, MASTER_ADDR,
MASTER_PORT (default 29500): with NPROC > 1 or NNODES > 1 the trainer runs under torchrun. With
NNODES > 1, --results-dir must be on a file system all nodes share (rank 0 writes, every rank resumes
from it). PYTORCH_CUDA_ALLOC_CONF defaults to expandable_segments:True.

Exit status: 0 target reached, 1 error, 2 bad usage or parameters, 3 aborted (every epoch run without
reaching the target: MLPerf counts that as a failed run; result.json says status "aborted").
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    first_line = USAGE.splitlines()[0].removeprefix("Usage: ")
    parser = argparse.ArgumentParser(prog="./run_and_time.sh", usage=first_line, add_help=False)
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--results-dir", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("overrides", nargs="*")
    args, unknown = parser.parse_known_intermixed_args(argv)
    if unknown:
        raise UsageError(f"unknown argument {unknown[0]!r} (see --help)")
    return args


def env_count(name: str, default: int, low: int = 1) -> int:
    """A whole-number environment variable >= low; UsageError naming it otherwise."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < low:
        raise UsageError(f"{name}={text!r}: must be a whole number >= {low}")
    return int(text)


def launcher(argv: list[str]) -> list[str] | None:
    """The torchrun command for NPROC > 1 or NNODES > 1 (None: run in this process)."""
    nproc, nnodes = env_count("NPROC", 1), env_count("NNODES", 1)
    if nproc == 1 and nnodes == 1:
        return None
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
    if nnodes == 1:
        torchrun += ["--standalone"]  # one node: torchrun picks a free port, so parallel runs cannot collide
    else:
        node_rank = env_count("NODE_RANK", -1, low=0)
        address = os.environ.get("MASTER_ADDR", "").strip()
        if node_rank < 0 or not address:
            raise UsageError("NNODES > 1 needs NODE_RANK and MASTER_ADDR (and MASTER_PORT, default 29500)")
        if node_rank >= nnodes:
            raise UsageError(f"NODE_RANK={node_rank}: must be below NNODES={nnodes}")
        port = env_count("MASTER_PORT", 29500)
        torchrun += ["--nnodes", str(nnodes), "--node-rank", str(node_rank), "--master-addr", address]
        torchrun += ["--master-port", str(port)]
    return [*torchrun, "-m", "pytorch.train", *argv]


def user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return str(os.getuid())


def stamp() -> str:
    return time.strftime("%Y-%m-%d %I:%M:%S %p")


def options_of(args: argparse.Namespace) -> RunOptions:
    """The run these arguments ask for; the results directory defaults to results/<date-time>."""
    if env_count("NNODES", 1) > 1 and args.results_dir is None and not args.dry_run:
        raise UsageError("NNODES > 1 needs --results-dir on a file system every node shares (checkpoints, resume)")
    results_dir = args.results_dir or (None if args.dry_run else REPO / "results" / time.strftime("%Y%m%d-%H%M%S"))
    return RunOptions(
        params.parse(args.overrides),
        (args.data_dir or loader.default_data_dir()).absolute(),
        results_dir.absolute() if results_dir else None,
        resume=args.resume,
        dry_run=args.dry_run,
        overrides=tuple(args.overrides),
    )


def run(args: argparse.Namespace) -> ExitStatus:
    if args.help:
        print(USAGE, end="")
        return ExitStatus.OK
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", train.CUDA_ALLOC_CONF)
    options = options_of(args)
    if options.dry_run:
        return train.train(options)
    command = launcher(options.trainer_argv())
    # Everything that can refuse the run does so now, before the clock starts (on this node's first device).
    checked = preflight.check_run(options, distributed.pick_device(options.device))
    start, start_stamp = time.time(), stamp()
    print(f"STARTING TIMING RUN AT {start_stamp}", flush=True)
    if command is None:
        status = train.train(options, checked)
    else:
        del checked  # each rank checks again on its own device (and loads its own copy of a resumed checkpoint)
        # The workers run from the repo with PYTHONSAFEPATH, so no data/ folder of the caller's is imported.
        env = dict(os.environ, PYTHONSAFEPATH="1")
        completed = subprocess.run(command, cwd=REPO, env=env).returncode == 0
        # Every node reads the run's status: the results directory is shared between nodes.
        status = results.exit_status_of(results.read_status(options.results_dir)) if completed else ExitStatus.ERROR
    end = time.time()
    print(f"ENDING TIMING RUN AT {stamp()}", flush=True)
    print(f"RESULT,{BENCHMARK},{options.params.seed},{round(end - start)},{user()},{start_stamp}", flush=True)
    if status == ExitStatus.TARGET_MISSED:
        print(f"Target not reached: run aborted (see {options.results_dir / 'result.json'})", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    return exit_status.run(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
