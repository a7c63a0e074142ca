"""`make gpu-check`: the one command that proves a CUDA machine, in one 10-minute call, offline.

On a machine whose Python already has torch (>= 2.11, never reinstalled), after
`scripts/install_wheelhouse.sh` has installed the rest from a wheelhouse made on a connected machine
(`make wheelhouse`), it runs and reports:
  1. the environment: GPUs, driver, CUDA, cuDNN (the version torch was compiled against, which decides
     bf16 GRUs, and the one it loaded), NCCL, torch, what fp32 means there, and which kernel runs the
     recurrent layers in each precision (probed);
  2. the CUDA tests (tests/test_cuda.py, every CUDA test of the repository);
  3. bench.epoch_time --sweep for the full model: one LibriSpeech epoch projected per configuration,
     the default recipe's first;
  4. a real training run on the GPU to the target WER: ./demo.sh (a synthetic corpus made here by the
     espeak-ng wheel, a loopback mirror, download_dataset.sh, verify_dataset.sh, run_and_time.sh).
Each step runs under its own time budget (stopped with its whole process group when it overruns);
the GPU budgets are the cost model's H100 estimates with a margin (`--budget STEP=SECONDS` changes
one). report.md and report.json (every step's full log beside them) are rewritten after every step,
so a check stopped anywhere keeps what it measured; a sweep stopped at its budget names the
configurations it did not reach.

--rehearse runs the same orchestration on a CPU with CPU-sized settings (the tiny preset's sweep over
LibriSpeech's shape at 1/20 of its length, a demo of 48 utterances to target_wer=100, the CUDA tests
marked rehearsable run on the CPU): every line of it except the CUDA kernels, which is what CI runs
(tests/test_gpu_check.py).

Exit status: 0 every step passed, 1 a step failed or timed out, or no CUDA device (without
--rehearse), 2 bad usage.

    scripts/gpu-check.sh [--out DIR] [--skip tests,sweep,train] [--budget STEP=SECONDS] [--quick] [--rehearse]
"""

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import exit_status
from data.files import write_atomically
from exit_status import ExitStatus, Failure

REPO = Path(__file__).resolve().parents[1]
STEPS = ("tests", "sweep", "train")
CALL_S = 600  # the whole check: one 10-minute call of a lent GPU machine
REPORT_S = 30  # left for start-up (the project's install, imports, the environment's probes) and the report
MARGIN = 1.5  # budget = MARGIN x the estimate: the cost model is first principles, not a measurement
# The sweep on a GPU: buckets x (steps + a warm-up) timed steps per configuration (bench.epoch_time).
SWEEP_BUCKETS, SWEEP_STEPS = 4, 1
# ESTIMATES (not measured) of what the cost model does not cover, on a GPU machine:
TEST_SESSION_S = 30.0  # pytest's start, collection, the CUDA context and the in-process CUDA tests
TEST_TRAINING_S = 15.0  # each training process tests/test_cuda.py starts: interpreter, torch, CUDA, 2 tiny epochs
TEST_TRAININGS = 6  # two ranks on one GPU: 1 + torchrun of 2; resume: 3
DEMO_S = 140.0  # ./demo.sh: synthesis and preparation of 12,500 utterances on 16 cores, 2-3 demo epochs
# A rehearsal on a CPU: its steps' sizes are tested to fit these (tests/test_gpu_check.py).
REHEARSAL_BUDGET = {"tests": 180, "sweep": 120, "train": 180}


@dataclass
class Plan:
    """What each step runs and may take, on a GPU or in a rehearsal."""

    rehearsal: bool
    quick: bool
    budgets: dict[str, int]
    estimates: dict[str, float] = field(default_factory=dict)  # seconds the GPU budgets come from

    def sweep_words(self) -> list[str]:
        if self.rehearsal:  # the tiny model: what the sweep does, in seconds on a CPU
            return ["preset=tiny", "--device", "cpu", "--seconds-scale", "0.05", "--buckets", "1", "--steps", "1"]
        return ["--buckets", str(2 if self.quick else SWEEP_BUCKETS), "--steps", str(1 if self.quick else SWEEP_STEPS)]

    def demo_words(self) -> list[str]:
        if self.rehearsal:  # a corpus of 48 utterances; any run meets target 100: the orchestration, not learning
            return ["--train", "48", "--dev", "12", "--jobs", "2", "hidden_size=32", "batch_size=8", "epochs=1"] + [
                "target_wer=100"
            ]
        sizes = ["--train", "3000", "--dev", "300"] if self.quick else []
        return [*sizes, "--jobs", str(os.cpu_count() or 2), "num_workers=4"]  # a GPU eats faster than 1 worker

    def test_env(self) -> dict:
        return {"DS2_GPU_CHECK_REHEARSAL": "1"} if self.rehearsal else {}


def params_default():
    """The full model and default recipe: what the GPU sweep measures."""
    import params

    return params.make()


def gpu_estimates() -> dict[str, float]:
    """ESTIMATED seconds of each step on one H100 (an H200 is no slower): the sweep from the cost model
    (bench.cost_model.sweep_seconds over bench.epoch_time.SWEEP), the others from the constants above."""
    from bench import cost_model

    return {
        "tests": TEST_SESSION_S + TEST_TRAININGS * TEST_TRAINING_S,
        "sweep": cost_model.sweep_seconds(params_default(), SWEEP_BUCKETS, SWEEP_STEPS),
        "train": DEMO_S,
    }


def make_plan(rehearsal: bool, quick: bool, overrides: dict[str, int]) -> Plan:
    if rehearsal:
        return Plan(True, quick, REHEARSAL_BUDGET | overrides)
    estimates = gpu_estimates()
    budgets = {step: math.ceil(MARGIN * seconds) for step, seconds in estimates.items()}
    return Plan(False, quick, budgets | overrides, estimates)


# ---------------------------------------------------------------- the environment


def environment(rehearsal: bool) -> dict:
    """What this machine is: the facts a GPU figure means nothing without. Failure without CUDA,
    unless rehearsing on a CPU."""
    import torch

    from pytorch import precision

    if not torch.cuda.is_available() and not rehearsal:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise Failure(
            f"make gpu-check needs a CUDA device: torch {torch.__version__} (CUDA build: {torch.version.cuda or 'no'}) "
            f"sees none" + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else "")
            + "; scripts/gpu-check.sh --rehearse runs the same check on this CPU"
        )  # fmt: skip
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
    cudnn = precision.cudnn_versions()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "host": platform.node(),
        "rehearsal": rehearsal,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn_compiled": precision.version_text(cudnn["compiled"]),  # decides whether bf16 GRUs run on cuDNN
        "cudnn_runtime": precision.version_text(cudnn["runtime"]),
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if gpus else None,
        "driver": nvidia_smi("driver_version"),
        "gpus": gpus,
        "fp32_math_by_default": precision.fp32_math_in_effect(),
        "recurrent_kernels": recurrent_kernels("cuda" if gpus else "cpu"),
    }


def recurrent_kernels(device: str) -> dict:
    """{precision: 'dtype on kernel'} as the probe observes them on `device` (the model's own GRU layer)."""
    import params
    from pytorch import precision
    from pytorch.model import probe_recurrent

    found = {}
    for name in ("fp32", "bf16") + (("fp16",) if device == "cuda" else ()):
        try:
            kernel = probe_recurrent(params.make({"precision": name}), device)
            found[name] = f"{kernel.dtype} on {kernel.kernel}"
        except precision.PrecisionError as err:
            found[name] = f"refused: {err}"
    return found


def nvidia_smi(field_name: str) -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(
        ["nvidia-smi", f"--query-gpu={field_name}", "--format=csv,noheader"], capture_output=True, text=True
    )
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None


# ---------------------------------------------------------------- steps


def run_step(name: str, command: list[str], out: Path, budget_s: float, env: dict | None = None) -> dict:
    """Run one step's command within budget_s seconds; its full output goes to out/<name>.log."""
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
            status = process.wait(timeout=budget_s)
        except subprocess.TimeoutExpired:
            stop_session(process)
            status = "timeout"
        except BaseException:  # Ctrl-C reaches only this process now: take the step's session with it
            stop_session(process)
            raise
    seconds = round(time.time() - start, 1)
    print(f"  {name}: {verdict(status)} in {seconds:.0f} s (budget {budget_s:.0f} s); log {log}", flush=True)
    return {"command": " ".join(command), "status": status, "seconds": seconds, "budget_s": budget_s, "log": log.name}


def verdict(status) -> str:
    return "passed" if status == 0 else "timeout" if status == "timeout" else f"FAILED (exit {status})"


def stop_session(process: subprocess.Popen, grace_s: float = 10) -> None:
    """SIGTERM to the step's whole session (demo.sh then stops its mirror), then SIGKILL to what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def tests_step(out: Path, plan: Plan) -> dict:
    junit = out / "cuda-tests.xml"
    pytest = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", f"--junitxml={junit}"]
    result = run_step("tests", [*pytest, "tests/test_cuda.py"], out, plan.budgets["tests"], plan.test_env())
    if junit.is_file():
        result["cases"] = {
            case.get("name"): case_verdict(case) for case in ElementTree.parse(junit).getroot().iter("testcase")
        }
    return result


def case_verdict(case) -> str:
    if case.find("failure") is not None or case.find("error") is not None:
        return "failed"
    return "skipped" if case.find("skipped") is not None else "passed"


def sweep_command(plan: Plan, figures: Path) -> list[str]:
    return [sys.executable, "-m", "bench.epoch_time", "--sweep", *plan.sweep_words(), "--json", str(figures)]


def sweep_step(out: Path, plan: Plan) -> dict:
    figures = out / "epoch-time.json"
    result = run_step("sweep", sweep_command(plan, figures), out, plan.budgets["sweep"])
    if figures.is_file():  # rewritten after every configuration: a stopped sweep keeps what it measured
        written = json.loads(figures.read_text())
        result |= {"results": written["results"], "not_reached": written["not_reached"]}
    return result


def train_step(out: Path, plan: Plan) -> dict:
    demo = out / "demo"
    command = [str(REPO / "demo.sh"), "--dir", str(demo), *plan.demo_words()]
    result = run_step("train", command, out, plan.budgets["train"])
    found = sorted(demo.glob("results/*/result.json"))
    if found:
        run = json.loads(found[-1].read_text())
        keys = ("status", "epochs", "final_wer", "target_wer", "time_to_train_s", "precision")
        result["result"] = {k: run.get(k) for k in keys}
    return result


# ---------------------------------------------------------------- the report


def markdown(report: dict) -> str:
    env = report["environment"]
    title = "gpu-check REHEARSAL on a CPU (no CUDA kernel ran)" if env.get("rehearsal") else "gpu-check"
    gpus = ", ".join(f"{g['name']} ({g['memory_gib']} GiB, sm {g['capability']})" for g in env["gpus"]) or "none"
    lines = [
        f"# {title}, {env['date']}",
        "",
        f"- GPUs: {len(env['gpus'])} x {gpus}; {env.get('cpus')} CPUs",
        f"- driver {env['driver']}, CUDA {env['cuda']}, cuDNN {env.get('cudnn_compiled')} compiled / "
        f"{env.get('cudnn_runtime')} loaded, NCCL {env['nccl']}, torch {env['torch']}, Python {env['python']}",
        f"- fp32 by default: {env['fp32_math_by_default']} (the benchmark sets fp32_math=ieee unless asked for tf32)",
        "- recurrent layers (probed): " + "; ".join(f"{k}: {v}" for k, v in env.get("recurrent_kernels", {}).items()),
        "",
        "| step | status | seconds | budget (s) |",
        "|---|---|---|---|",
    ]
    for name in STEPS:
        step = report["steps"].get(name)
        if step is None:
            lines.append(f"| {name} | {report.get('pending', {}).get(name, 'not run')} | | |")
        else:
            lines.append(f"| {name} | {verdict(step['status'])} | {step['seconds']} | {step.get('budget_s', '')} |")
    if report.get("estimates"):
        derivation = ", ".join(f"{k} {v:.0f} s" for k, v in report["estimates"].items())
        lines += ["", f"Budgets: {MARGIN} x the ESTIMATED seconds on one H100 ({derivation}; bench/gpu_check.py)."]
    lines += tests_lines(report["steps"].get("tests", {}))
    lines += sweep_lines(report["steps"].get("sweep", {}))
    run = report["steps"].get("train", {}).get("result")
    if run:
        lines += ["", "## Training (./demo.sh, synthetic corpus made here)", "", f"- {json.dumps(run)}"]
    return "\n".join(lines) + "\n"


def tests_lines(step: dict) -> list[str]:
    cases = step.get("cases", {})
    return ["", "## CUDA tests", ""] + [f"- {name}: {v}" for name, v in cases.items()] if cases else []


def sweep_lines(step: dict) -> list[str]:
    results, missing = step.get("results", []), step.get("not_reached", [])
    if not results and not missing:
        return []
    lines = [
        "",
        "## One LibriSpeech epoch, projected (bench.epoch_time --sweep)",
        "",
        "| configuration | recurrent | step time range (s) | utt/s | peak memory (GiB) | of matmul | epoch "
        "| 10 epochs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        name = f"{r.get('label') or ''}: {r['config']}".lstrip(": ")
        if "error" in r:
            lines.append(f"| {name} | | {r['error']} | | | | | |")
            continue
        steps = [b["step_s"] for b in r["buckets"]]
        peak = f"{r['peak_memory_bytes'] / 2**30:.1f}" if r["peak_memory_bytes"] is not None else "n/a"
        lines.append(
            f"| {name} | {r['recurrent_dtype']} on {r['recurrent_kernel']} | {min(steps):.3f}-{max(steps):.3f} | "
            f"{r['utt_per_s']:.0f} | {peak} | {r['efficiency']:.1%} | {r['epoch_s'] / 3600:.2f} h | "
            f"{r['ten_epochs_s'] / 3600:.1f} h |"
        )
    lines += [f"| NOT REACHED within the budget: {config} | | | | | | | |" for config in missing]
    return lines


def write_report(out: Path, report: dict) -> None:
    write_atomically(out / "report.json", json.dumps(report, indent=1) + "\n")
    write_atomically(out / "report.md", markdown(report))


# ---------------------------------------------------------------- the command


def parse_budget(text: str) -> tuple[str, int]:
    step, _, seconds = text.partition("=")
    if step not in STEPS or not seconds.isdigit() or int(seconds) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected STEP=SECONDS with STEP one of {', '.join(STEPS)}")
    return step, int(seconds)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="scripts/gpu-check.sh",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, help="report directory (default: gpu-check/<date-time> in the repo)")
    parser.add_argument("--skip", default="", help=f"comma-separated steps to skip: {', '.join(STEPS)}")
    parser.add_argument(
        "--budget", type=parse_budget, action="append", default=[], metavar="STEP=SECONDS", help="one step's budget"
    )
    parser.add_argument("--quick", action="store_true", help="fewer buckets and a smaller corpus (a smoke test)")
    parser.add_argument("--rehearse", action="store_true", help="the same check on this CPU, CPU-sized (no CUDA)")
    args = parser.parse_args(argv)
    args.skip = {s for s in args.skip.split(",") if s}
    if args.skip - set(STEPS):
        parser.error(f"--skip {','.join(sorted(args.skip - set(STEPS)))}: steps are {', '.join(STEPS)}")
    return args


def run(args) -> ExitStatus:
    env = environment(args.rehearse)
    plan = make_plan(args.rehearse, args.quick, dict(args.budget))
    out = (args.out or REPO / "gpu-check" / time.strftime("%Y%m%d-%H%M%S")).absolute()
    out.mkdir(parents=True, exist_ok=True)
    device = f"{len(env['gpus'])} x {env['gpus'][0]['name']}" if env["gpus"] else "REHEARSAL on the CPU"
    print(f"gpu-check: {device}, torch {env['torch']}; report in {out}", flush=True)
    steps_to_run = [s for s in STEPS if s not in args.skip]
    pending = {s: "skipped" if s in args.skip else "not reached" for s in STEPS}
    report = {"environment": env, "budgets": plan.budgets, "estimates": plan.estimates, "steps": {}, "pending": pending}
    write_report(out, report)
    run_of = {"tests": tests_step, "sweep": sweep_step, "train": train_step}
    for name in steps_to_run:
        report["steps"][name] = run_of[name](out, plan)
        del pending[name]
        write_report(out, report)  # after every step: a check stopped later keeps this one
    print(markdown(report), flush=True)
    return ExitStatus.OK if all(s["status"] == 0 for s in report["steps"].values()) else ExitStatus.ERROR


def main(argv=None) -> int:
    args = parse_args(argv)
    return exit_status.run(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
