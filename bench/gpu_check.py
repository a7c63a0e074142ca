"""`make gpu-check`: the one command that proves a CUDA machine, in at most 10 minutes, offline.

On a machine whose Python already has torch (>= 2.11, never reinstalled) and numpy, after
`scripts/install_wheelhouse.sh` has installed the rest from a wheelhouse made on a connected machine
(`make wheelhouse`), it runs and reports:
  1. the environment: GPUs, driver, CUDA, cuDNN, NCCL, torch, and what fp32 means there (TF32 or not);
  2. the CUDA tests (pytest -m cuda: precision probe, BatchNorm under autocast, CUDA == CPU, two ranks
     on one GPU, resume, one device read per step);
  3. bench.epoch_time --sweep for the full model: one LibriSpeech epoch projected per batch size and
     precision;
  4. a real training run on the GPU to the target WER: ./demo.sh (a synthetic corpus made here by the
     espeak-ng wheel, a loopback mirror, download_dataset.sh, verify_dataset.sh, run_and_time.sh).
The report goes to gpu-check/<date-time>/report.md and report.json (with every step's full log beside
them). Exit status: 0 every step passed, 1 a step failed or no CUDA device, 2 bad usage.

    scripts/gpu-check.sh [--out DIR] [--skip tests,sweep,train] [--quick]
"""

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import exit_status
from exit_status import ExitStatus, Failure

REPO = Path(__file__).resolve().parents[1]
STEPS = ("tests", "sweep", "train")
# Seconds each step may take: 9.5 minutes together, so that with start-up and the report the whole
# check stays within the 10 minutes (tests/test_gpu_check.py holds them to it). A step past
# its budget is stopped and reported as "timeout"; the next step still runs.
TOTAL_BUDGET_S = 600
BUDGET = {"tests": 120, "sweep": 210, "train": 240}


def environment() -> dict:
    """What this machine is: the facts a GPU figure means nothing without."""
    import torch

    from pytorch import precision

    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise Failure(
            f"make gpu-check needs a CUDA device: torch {torch.__version__} (CUDA build: {torch.version.cuda or 'no'}) "
            f"sees none" + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else "")
        )
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        gpus.append(
            {
                "name": props.name,
                "memory_gib": round(props.total_memory / 2**30, 1),
                "capability": f"{props.major}.{props.minor}",
                "multiprocessors": props.multi_processor_count,
            }
        )
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if hasattr(torch.cuda, "nccl") else None,
        "driver": nvidia_smi("driver_version"),
        "gpus": gpus,
        "fp32_math_by_default": precision.fp32_math_in_effect(),
    }


def nvidia_smi(field: str) -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(
        ["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"], capture_output=True, text=True
    )
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None


def run_step(name: str, command: list[str], out: Path, env: dict | None = None) -> dict:
    """Run one step's command with its time budget; its full output goes to out/<name>.log."""
    log = out / f"{name}.log"
    start = time.time()
    with open(log, "w") as sink:
        # A session of its own: on timeout the whole step stops (demo.sh's trainer, mirror, ...), not
        # only its first process, so nothing of it runs on into the next step.
        process = subprocess.Popen(
            command,
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
            start_new_session=True,
        )
        try:
            status = process.wait(timeout=BUDGET[name])
        except subprocess.TimeoutExpired:
            stop_session(process)
            status = "timeout"
        except BaseException:  # Ctrl-C reaches only this process now: take the step's session with it
            stop_session(process)
            raise
    print(f"  {name}: {'passed' if status == 0 else f'FAILED ({status})'} in {time.time() - start:.0f} s; log {log}")
    return {"command": " ".join(command), "status": status, "seconds": round(time.time() - start, 1), "log": log.name}


def stop_session(process: subprocess.Popen, grace_s: float = 10) -> None:
    """SIGTERM to the step's whole session (demo.sh then stops its mirror), then SIGKILL to what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def tests_step(out: Path) -> dict:
    junit = out / "cuda-tests.xml"
    result = run_step(
        "tests",
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-m",
            "cuda",
            "-p",
            "no:cacheprovider",
            f"--junitxml={junit}",
            "tests/test_cuda.py",
        ],
        out,
    )
    if junit.is_file():
        cases = ElementTree.parse(junit).getroot().iter("testcase")
        result["cases"] = {
            case.get("name"): (
                "failed"
                if case.find("failure") is not None or case.find("error") is not None
                else "skipped"
                if case.find("skipped") is not None
                else "passed"
            )
            for case in cases
        }
    return result


def sweep_step(out: Path, quick: bool) -> dict:
    figures = out / "epoch-time.json"
    buckets = ["--buckets", "3", "--steps", "1"] if quick else ["--buckets", "6", "--steps", "2"]
    result = run_step(
        "sweep", [sys.executable, "-m", "bench.epoch_time", "--sweep", *buckets, "--json", str(figures)], out
    )
    if figures.is_file():
        result["results"] = json.loads(figures.read_text())["results"]
    return result


def train_step(out: Path, quick: bool) -> dict:
    demo = out / "demo"
    sizes = ["--train", "3000", "--dev", "300"] if quick else []
    result = run_step(
        "train", [str(REPO / "demo.sh"), "--dir", str(demo), "--jobs", str(os.cpu_count() or 2), *sizes], out
    )
    found = sorted(demo.glob("results/*/result.json"))
    if found:
        run = json.loads(found[-1].read_text())
        result["result"] = {
            k: run.get(k) for k in ("status", "epochs", "final_wer", "target_wer", "time_to_train_s", "precision")
        }
    return result


def markdown(report: dict) -> str:
    env = report["environment"]
    gpus = ", ".join(f"{g['name']} ({g['memory_gib']} GiB, sm {g['capability']})" for g in env["gpus"])
    lines = [
        f"# gpu-check, {env['date']}",
        "",
        f"- GPUs: {len(env['gpus'])} x {gpus}",
        f"- driver {env['driver']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, NCCL {env['nccl']}, "
        f"torch {env['torch']}, Python {env['python']}",
        f"- fp32 by default: {env['fp32_math_by_default']} (the benchmark sets fp32_math=ieee unless asked for tf32)",
        "",
        "| step | status | seconds |",
        "|---|---|---|",
    ]
    lines += [
        f"| {name} | {'passed' if s['status'] == 0 else s['status']} | {s['seconds']} |"
        for name, s in report["steps"].items()
    ]
    tests = report["steps"].get("tests", {}).get("cases", {})
    if tests:
        lines += ["", "## CUDA tests", ""] + [f"- {name}: {verdict}" for name, verdict in tests.items()]
    results = report["steps"].get("sweep", {}).get("results", [])
    if results:
        lines += [
            "",
            "## One LibriSpeech epoch, projected (bench.epoch_time --sweep, full model)",
            "",
            "| configuration | step time range (s) | utt/s | peak memory (GiB) | of matmul | epoch | 10 epochs |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in results:
            if "error" in r:
                lines.append(f"| {r['config']} | {r['error']} | | | | | |")
                continue
            steps = [b["step_s"] for b in r["buckets"]]
            lines.append(
                f"| {r['config']} | {min(steps):.3f}-{max(steps):.3f} | {r['utt_per_s']:.0f} | "
                f"{r['peak_memory_bytes'] / 2**30:.1f} | {r['efficiency']:.1%} | {r['epoch_s'] / 3600:.2f} h | "
                f"{r['ten_epochs_s'] / 3600:.1f} h |"
            )
    run = report["steps"].get("train", {}).get("result")
    if run:
        lines += ["", "## Training on the GPU (./demo.sh, synthetic corpus made here)", "", f"- {json.dumps(run)}"]
    return "\n".join(lines) + "\n"


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="scripts/gpu-check.sh",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, help="report directory (default: gpu-check/<date-time> in the repo)")
    parser.add_argument("--skip", default="", help=f"comma-separated steps to skip: {', '.join(STEPS)}")
    parser.add_argument("--quick", action="store_true", help="fewer buckets and a smaller corpus (a smoke test)")
    args = parser.parse_args(argv)
    args.skip = {s for s in args.skip.split(",") if s}
    if args.skip - set(STEPS):
        parser.error(f"--skip {','.join(sorted(args.skip - set(STEPS)))}: steps are {', '.join(STEPS)}")
    return args


def run(args) -> ExitStatus:
    env = environment()
    out = (args.out or REPO / "gpu-check" / time.strftime("%Y%m%d-%H%M%S")).absolute()
    out.mkdir(parents=True, exist_ok=True)
    print(f"gpu-check: {len(env['gpus'])} x {env['gpus'][0]['name']}, torch {env['torch']}; report in {out}")
    steps = {}
    if "tests" not in args.skip:
        steps["tests"] = tests_step(out)
    if "sweep" not in args.skip:
        steps["sweep"] = sweep_step(out, args.quick)
    if "train" not in args.skip:
        steps["train"] = train_step(out, args.quick)
    report = {"environment": env, "steps": steps}
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.md").write_text(markdown(report))
    print(markdown(report))
    return ExitStatus.OK if all(s["status"] == 0 for s in steps.values()) else ExitStatus.ERROR


def main(argv=None) -> int:
    args = parse_args(argv)
    return exit_status.run(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
