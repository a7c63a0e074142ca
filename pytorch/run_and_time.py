"""Time one training run to the target WER, MLPerf style: the Python side of ./run_and_time.sh.

Checks the parameters and the data first (exit 2 or 1, no timing lines), then prints
    STARTING TIMING RUN AT <date>
    ... the trainer's output ...
    ENDING TIMING RUN AT <date>
    RESULT,SPEECH_RECOGNITION,<seed>,<seconds>,<user>,<start date>
as other MLPerf references do (seconds: wall time from before the trainer starts to after it ends).
One process runs the trainer here; NPROC > 1 or NNODES > 1 runs it under torchrun. Exit status
(exit_status.py): 0 target reached, 3 every epoch run without reaching it, 1 error, 2 bad usage.

This is the training loop's launcher (it and the benches that time the trainer's own step import pytorch.train): every
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

Environment (docs/cluster.md):
  NPROC (processes per node, default 1), NNODES (default 1), NODE_RANK (default: Slurm's SLURM_NODEID),
  MASTER_ADDR, MASTER_PORT (default 29500): with NPROC > 1 or NNODES > 1 one torchrun per node starts
  the trainers. MAX_RESTARTS=N (default 0): torchrun restarts every rank up to N times after one fails,
  and the run continues from its last checkpoint, its clock running on.
  Without torchrun, one task per GPU: under srun (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID) or mpirun
  (OMPI_COMM_WORLD_*), each task is one rank; MASTER_ADDR names the rendezvous. Rank 0 alone prints
  the timing lines.
  With several nodes, --results-dir must be on a file system all nodes share (rank 0 writes, every
  rank resumes from it). PYTORCH_CUDA_ALLOC_CONF defaults to expandable_segments:True.

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


def node_rank() -> int:
    """This node's rank: NODE_RANK, else Slurm's node id (one torchrun per node under srun), else 0."""
    if os.environ.get("NODE_RANK", "").strip():
        return env_count("NODE_RANK", 0, low=0)
    return env_count("SLURM_NODEID", 0, low=0)


def launcher(argv: list[str]) -> list[str] | None:
    """The torchrun command for NPROC > 1, NNODES > 1 or MAX_RESTARTS > 0 (None: run in this process)."""
    nproc, nnodes, restarts = env_count("NPROC", 1), env_count("NNODES", 1), env_count("MAX_RESTARTS", 0, low=0)
    if nproc == 1 and nnodes == 1 and restarts == 0:
        return None
    if distributed.launch().launcher in ("slurm", "mpi") and nnodes == 1 and distributed.launch().size > 1:
        raise UsageError("one task per GPU (srun/mpirun) runs without torchrun: leave NPROC and MAX_RESTARTS unset")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
    torchrun += ["--max-restarts", str(restarts)]
    if nnodes == 1:
        torchrun += ["--standalone"]  # one node: torchrun picks a free port, so parallel runs cannot collide
    else:
        rank, address = node_rank(), os.environ.get("MASTER_ADDR", "").strip()
        if not address:
            raise UsageError("NNODES > 1 needs MASTER_ADDR (and NODE_RANK outside Slurm; MASTER_PORT, default 29500)")
        if rank >= nnodes:
            raise UsageError(f"NODE_RANK={rank}: must be below NNODES={nnodes}")
        port = env_count("MASTER_PORT", 29500)
        torchrun += ["--nnodes", str(nnodes), "--node-rank", str(rank), "--master-addr", address]
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
    several = env_count("NNODES", 1) > 1 or distributed.launch().size > 1  # nodes, or srun/mpirun tasks
    if several and args.results_dir is None and not args.dry_run:
        raise UsageError(
            "several nodes or tasks need --results-dir on a file system all of them share (checkpoints, resume)"
        )
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
    # One launcher per node under torchrun, one per rank under srun/mpirun: the first one speaks.
    speaks = node_rank() == 0 if command else distributed.launch().rank == 0
    # Everything that can refuse the run does so now, before the clock starts (on this node's first device).
    checked = preflight.check_run(options, distributed.pick_device(options.device), main=speaks)
    start, start_stamp = time.time(), stamp()
    if speaks:
        print(f"STARTING TIMING RUN AT {start_stamp}", flush=True)
    status = timed(options, command, checked)
    end = time.time()
    if speaks:
        print(f"ENDING TIMING RUN AT {stamp()}", flush=True)
        print(f"RESULT,{BENCHMARK},{options.params.seed},{round(end - start)},{user()},{start_stamp}", flush=True)
    if status == ExitStatus.TARGET_MISSED and speaks:
        print(f"Target not reached: run aborted (see {options.results_dir / 'result.json'})", file=sys.stderr)
    return status


def timed(options: RunOptions, command: list[str] | None, checked: preflight.Checked) -> ExitStatus:
    """The training, in this process or under torchrun -> the run's exit status (from result.json,
    which every node can read: the results directory is shared, and ranks of a distributed run exit 0
    whether or not the target was reached)."""
    if command is None:
        status = train.train(options, checked)
        distributed_run = distributed.launch().size > 1
        return results.exit_status_of(results.read_status(options.results_dir)) if distributed_run else status
    del checked  # each rank checks again on its own device (and loads its own copy of a resumed checkpoint)
    # The workers run from the repo with PYTHONSAFEPATH, so no data/ folder of the caller's is imported.
    done = subprocess.run(command, cwd=REPO, env=dict(os.environ, PYTHONSAFEPATH="1"))
    if done.returncode != 0:
        exit_status.error(
            f"the training processes stopped (torchrun exit status {done.returncode}): torchrun's report above "
            "('Root Cause') names the rank that failed first; the others were stopped"
        )
        return ExitStatus.ERROR
    return results.exit_status_of(results.read_status(options.results_dir))


def main(argv: list[str] | None = None) -> int:
    return exit_status.run(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
