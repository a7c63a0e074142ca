"""Several processes as a cluster runs them, on this CPU over gloo: ranks from Slurm's, Open MPI's and
torchrun's variables, two nodes' rendezvous on loopback, one task per rank as srun starts them, a
rank killed mid-epoch (with and without elastic restarts) and a rank that hangs.

Every multi-process run here is compared with ONE process accumulating the same micro-batches
(batch 8 = 2 x 4), which on the CPU takes exactly the same steps (tests/test_run_and_time.py)."""

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

import params
from exit_status import ExitStatus, UsageError
from pytorch import distributed, mlperf, train
from tests import trainer_fixtures

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "run_and_time.sh"
COMMON = ["preset=tiny", "optimizer=adamw", "lr=1e-2", "batch_size=8", "target_wer=0", "epochs=2"]
# Slow enough (about a second an epoch with two ranks) that a rank can be stopped in the middle of one.
SLOW = ["preset=tiny", "hidden_size=64", "conv_channels=8", "optimizer=adamw", "lr=1e-2", "batch_size=8"]
SLOW += ["target_wer=0", "epochs=3", "num_workers=0"]
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "NPROC", "NNODES", "NODE_RANK", "MAX_RESTARTS")


# ---------------------------------------------------------------- ranks from the launcher's variables


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, distributed.Launch(0, 1, 0, "none")),
        ({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "3"}, distributed.Launch(3, 8, 3, "torchrun")),
        # srun --ntasks-per-node=8 on 2 nodes: task 11 is the 4th GPU of the second node
        (
            {"SLURM_STEP_ID": "0", "SLURM_PROCID": "11", "SLURM_NTASKS": "16", "SLURM_LOCALID": "3"},
            distributed.Launch(11, 16, 3, "slurm"),
        ),
        # the batch script itself (no srun step): one process, whatever --ntasks says
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "16", "SLURM_LOCALID": "0"}, distributed.Launch(0, 1, 0, "none")),
        # one torchrun per node under srun: torchrun's variables win over the step's
        (
            {"SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_NTASKS": "2", "RANK": "9", "WORLD_SIZE": "16"},
            distributed.Launch(9, 16, 0, "torchrun"),
        ),
        (
            {"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "1"},
            distributed.Launch(5, 8, 1, "mpi"),
        ),
    ],
)
def test_ranks_come_from_whichever_launcher_started_the_process(env, expected):
    assert distributed.launch(env) == expected


def test_bad_launcher_variables_are_named():
    with pytest.raises(UsageError, match="SLURM_PROCID='x'"):
        distributed.launch({"SLURM_STEP_ID": "0", "SLURM_PROCID": "x", "SLURM_NTASKS": "2"})
    with pytest.raises(UsageError, match="RANK=4: must be below WORLD_SIZE=4"):
        distributed.launch({"RANK": "4", "WORLD_SIZE": "4"})


def test_one_torchrun_per_node_takes_its_node_rank_from_slurm(monkeypatch):
    from pytorch import run_and_time

    for name, value in dict(NNODES="2", NPROC="8", SLURM_NODEID="1", SLURM_STEP_ID="0", SLURM_PROCID="1",
                            SLURM_NTASKS="2", MASTER_ADDR="node-a").items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("NODE_RANK", raising=False)
    command = " ".join(run_and_time.launcher(["--data-dir", "d"]))
    assert "--nproc-per-node 8 --max-restarts 0 --nnodes 2 --node-rank 1 --master-addr node-a" in command
    monkeypatch.setenv("NODE_RANK", "0")  # an explicit NODE_RANK wins
    assert "--node-rank 0" in " ".join(run_and_time.launcher([]))


def test_one_task_per_gpu_refuses_a_torchrun_of_its_own(monkeypatch):
    from pytorch import run_and_time

    for name, value in dict(NPROC="2", SLURM_STEP_ID="0", SLURM_PROCID="0", SLURM_NTASKS="8").items():
        monkeypatch.setenv(name, value)
    for name in ("NNODES", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UsageError, match="one task per GPU"):
        run_and_time.launcher([])


# ---------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES and not k.startswith(("SLURM_", "OMPI_"))}
    return env | {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""} | extra


def launch(data, results, words, env) -> subprocess.Popen:
    args = [str(SCRIPT), "--data-dir", str(data), "--results-dir", str(results), *words]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def one_process(data, results, words) -> list[dict]:
    args = ["--data-dir", str(data), "--results-dir", str(results), "--device", "cpu", *words]
    assert train.main([*args, "gradient_accumulation_steps=2"]) == ExitStatus.TARGET_MISSED
    return metrics(results)


def metrics(results) -> list[dict]:
    return [json.loads(line) for line in (Path(results) / "metrics.jsonl").read_text().splitlines()]


def assert_same_training(one: list[dict], other: list[dict]) -> None:
    assert len(one) == len(other)
    for a, b in zip(one, other):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4), (a, b)
        assert (b["wer"], b["cer"], b["skipped_steps"]) == (a["wer"], a["cer"], a["skipped_steps"])


def finish(processes, timeout=300) -> list[tuple[int, str, str]]:
    done = []
    for process in processes:
        out, err = process.communicate(timeout=timeout)
        done.append((process.returncode, out, err))
    return done


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return trainer_fixtures.write_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def slow_data(tmp_path_factory):
    return trainer_fixtures.write_learning_dataset(tmp_path_factory.mktemp("slow"), params.parse(SLOW))


# ---------------------------------------------------------------- rendezvous


def test_two_nodes_on_loopback_train_as_one_process(data, tmp_path):
    """Two launchers acting as two nodes (NNODES=2, node ranks 0 and 1, one torchrun each, a static
    rendezvous at 127.0.0.1): the steps of one process; exactly one RESULT line, from node 0."""
    port = free_port()
    nodes = [
        launch(
            data,
            tmp_path / "two",
            COMMON,
            clean_env(NNODES="2", NODE_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)),
        )  # fmt: skip
        for rank in (0, 1)
    ]
    (status0, out0, err0), (status1, out1, err1) = finish(nodes)
    assert status0 == status1 == ExitStatus.TARGET_MISSED, err0[-3000:] + err1[-3000:]
    assert (out0 + out1).count("RESULT,SPEECH_RECOGNITION,") == 1 and "RESULT," in out0
    assert_same_training(one_process(data, tmp_path / "one", COMMON), metrics(tmp_path / "two"))


def test_one_task_per_rank_as_srun_starts_them(data, tmp_path):
    """srun --ntasks=2 without torchrun: each task is one rank by SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID."""
    port = free_port()
    tasks = [
        launch(
            data,
            tmp_path / "srun",
            COMMON,
            clean_env(
                SLURM_STEP_ID="0",
                SLURM_PROCID=str(rank),
                SLURM_NTASKS="2",
                SLURM_LOCALID=str(rank),
                SLURM_NODEID="0",
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port),
            ),
        )  # fmt: skip
        for rank in (0, 1)
    ]
    (status0, out0, err0), (status1, out1, err1) = finish(tasks)
    assert status0 == status1 == ExitStatus.TARGET_MISSED, err0[-3000:] + err1[-3000:]
    assert out0.count("RESULT,SPEECH_RECOGNITION,") == 1 and "RESULT," not in out1
    assert_same_training(one_process(data, tmp_path / "one", COMMON), metrics(tmp_path / "srun"))


# ---------------------------------------------------------------- a rank that fails


def rank_pid(results: Path, rank: int, timeout: float = 120) -> int:
    """The pid of the trainer process of `rank` writing into `results`, once it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            try:
                command = (proc / "cmdline").read_bytes().split(b"\0")
                environ = (proc / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"pytorch.train" in command and str(results).encode() in command and f"RANK={rank}".encode() in environ:
                return int(proc.name)
        time.sleep(0.05)
    raise AssertionError(f"no rank {rank} trainer writing into {results}")


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def stop_mid_epoch_2(results: Path, process: subprocess.Popen, how: signal.Signals) -> float:
    """Signal rank 1 once epoch 1's checkpoint is written and epoch 2 is under way; returns when."""
    wait_for(results / "checkpoints" / "last.pt", process)
    time.sleep(0.3)  # into epoch 2 (an epoch takes about a second)
    os.kill(rank_pid(results, 1), how)
    return time.time()


def test_a_killed_rank_with_restarts_resumes_to_the_same_result(slow_data, tmp_path):
    """MAX_RESTARTS=1: torchrun restarts both ranks after rank 1 is killed mid-epoch; the run goes on
    from its last checkpoint and ends with the metrics of an unbroken run. Its MLPerf log says so
    (one run_start, a restart event) and passes the log rules; the time to train includes the lost time."""
    unbroken = launch(slow_data, tmp_path / "unbroken", SLOW, clean_env(NPROC="2"))
    ((status, _, err),) = finish([unbroken])
    assert status == ExitStatus.TARGET_MISSED, err[-3000:]

    run = launch(slow_data, tmp_path / "broken", SLOW, clean_env(NPROC="2", MAX_RESTARTS="1"))
    stop_mid_epoch_2(tmp_path / "broken", run, signal.SIGKILL)
    ((status, out, err),) = finish([run])
    assert status == ExitStatus.TARGET_MISSED, err[-3000:]
    assert out.count("RESULT,SPEECH_RECOGNITION,") == 1
    assert_same_training(metrics(tmp_path / "unbroken"), metrics(tmp_path / "broken"))

    events = mlperf.read_events(tmp_path / "broken" / mlperf.LOG_NAME)
    keys = [e["key"] for e in events]
    assert keys.count("run_start") == 1 and keys.count("restart") == 1 and keys.count("run_stop") == 1
    restart = next(e for e in events if e["key"] == "restart")
    assert restart["value"] == 1 and restart["metadata"]["epoch_num"] == 1
    ok, report = mlperf.check_log(tmp_path / "broken" / mlperf.LOG_NAME, tmp_path / "checker.log", mlperf.LOG_RULES)
    assert ok, report
    result = json.loads((tmp_path / "broken" / "result.json").read_text())
    start, stop = (next(e["time_ms"] for e in events if e["key"] == key) / 1000 for key in ("run_start", "run_stop"))
    assert result["restarts"] == 1 and result["resumed"] == 0
    assert result["time_to_train_s"] == pytest.approx(stop - start, abs=1.0)  # the lost time counted


def test_a_killed_rank_without_restarts_stops_the_run_naming_it(slow_data, tmp_path):
    run = launch(slow_data, tmp_path / "r", SLOW, clean_env(NPROC="2"))
    killed_at = stop_mid_epoch_2(tmp_path / "r", run, signal.SIGKILL)
    ((status, out, err),) = finish([run], timeout=120)
    assert status == ExitStatus.ERROR and time.time() - killed_at < 60
    assert "rank         : 1" in err or "rank: 1" in err, err[-3000:]  # torchrun's report names it
    assert "the training processes stopped" in err and "RESULT," in out  # the timing lines still end


def test_a_hung_rank_stops_the_run_after_the_collective_timeout(slow_data, tmp_path):
    """SIGSTOP on rank 1: rank 0 waits dist_timeout_s in its next all-reduce, then stops with an error
    saying so, instead of waiting forever. (torchrun then gives the stopped rank 30 s of grace before it
    kills it; the test kills it itself once rank 0 has spoken, and checks that the run ends in error.)"""
    run = launch(slow_data, tmp_path / "r", [*SLOW, "dist_timeout_s=5"], clean_env(NPROC="2"))
    stopped_at = stop_mid_epoch_2(tmp_path / "r", run, signal.SIGSTOP)
    said, lines = None, []
    try:
        for line in run.stderr:  # as rank 0 writes it
            lines.append(line)
            if "dist_timeout_s=5" in line:
                said = time.time()
                break
    finally:
        for pid in _trainers(tmp_path / "r"):  # a stopped process takes no SIGTERM: never leave one behind
            os.kill(pid, signal.SIGKILL)
    ((status, _, err),) = finish([run], timeout=120)
    assert said is not None, "".join(lines)[-3000:] + err[-3000:]
    assert said - stopped_at < 30 and "a collective timed out" in "".join(lines[-3:])
    assert status == ExitStatus.ERROR


def _trainers(results: Path) -> list[int]:
    """The trainer processes (not their launchers) writing into `results`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            if b"pytorch.train" in command and str(results).encode() in command:
                pids.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return pids
