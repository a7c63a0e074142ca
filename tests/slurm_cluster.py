"""A one-machine Slurm cluster on localhost for tests/test_slurm.py: munge and Slurm from Debian's
packages (slurm-wlm, munge), their configuration, keys, sockets, state and logs in one directory.

Everything it starts is stopped by `stop()`; nothing outside its directory is written except what
apt-get installs. `why_not()` says why it cannot run here (not root, no apt-get, the install failed).
"""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")


def why_not() -> str | None:
    """None when Slurm's daemons and commands are here, or were just installed; else the reason."""
    if all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "sbatch", "munged")):
        return None
    if os.geteuid() != 0:
        return f"Slurm is not installed and installing it ({', '.join(PACKAGES)}) needs root"
    if shutil.which("apt-get") is None:
        return "Slurm is not installed and there is no apt-get to install it"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            return f"{' '.join(command)} failed: {(done.stderr or done.stdout).strip()[-300:]}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSlurm:
    """slurmctld and one slurmd on this machine (root), a partition `test` of its CPUs."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        self.socket = self.root / "munge.socket"
        self.processes: list[subprocess.Popen] = []
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))

    def start(self, timeout_s: float = 60) -> None:
        for name in ("spool", "state", "munge"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        self._daemon(
            "munged", "--foreground", "--force", f"--socket={self.socket}", f"--key-file={key}",
            f"--log-file={self.root / 'munged.log'}", f"--pid-file={self.root / 'munged.pid'}",
            f"--seed-file={self.root / 'munge' / 'munged.seed'}",
        )  # fmt: skip
        self._wait(lambda: self.socket.exists(), timeout_s, "munged's socket")
        self.conf.write_text(self._slurm_conf())
        self._daemon("slurmctld", "-D", "-f", str(self.conf))
        self._daemon("slurmd", "-D", "-f", str(self.conf))
        self._wait(self._node_idle, timeout_s, "the node to be idle (sinfo)")

    def _slurm_conf(self) -> str:
        host = socket.gethostname().split(".")[0]
        cpus = os.cpu_count() or 1
        return "\n".join(
            [
                "ClusterName=ds2test",
                f"SlurmctldHost={host}",
                f"SlurmctldPort={free_port()}",
                f"SlurmdPort={free_port()}",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={self.socket}",
                "SlurmUser=root",
                "SlurmdUser=root",
                f"StateSaveLocation={self.root / 'state'}",
                f"SlurmdSpoolDir={self.root / 'spool'}",
                f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
                f"SlurmdPidFile={self.root / 'slurmd.pid'}",
                f"SlurmctldLogFile={self.root / 'slurmctld.log'}",
                f"SlurmdLogFile={self.root / 'slurmd.log'}",
                "ProctrackType=proctrack/linuxproc",  # no cgroups needed
                "TaskPlugin=task/none",
                "MpiDefault=none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_CPU",
                "ReturnToService=2",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN",
                f"PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES",
                "",
            ]
        )

    def _daemon(self, *command: str) -> None:
        log = open(self.root / f"{command[0]}.out", "w")  # noqa: SIM115 (the daemon's, for its lifetime)
        self.processes.append(subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def _node_idle(self) -> bool:
        done = self.run("sinfo", "--noheader", "--format=%T")
        return done.returncode == 0 and "idle" in done.stdout

    def _wait(self, ready, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            dead = [p.args[0] for p in self.processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"local Slurm: no {what} ({'died: ' + ', '.join(dead) if dead else 'timeout'}); "
                                   f"logs in {self.root}")  # fmt: skip
            time.sleep(0.2)

    def run(self, *command: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(command, env=kwargs.pop("env", self.env), capture_output=True, text=True, **kwargs)

    def sbatch(self, script: Path, *options: str, env: dict, cwd: Path) -> str:
        done = self.run("sbatch", "--parsable", *options, str(script), env=self.env | env, cwd=cwd)
        if done.returncode != 0:
            raise RuntimeError(f"sbatch failed: {done.stderr.strip()}")
        return done.stdout.strip().split(";")[0]

    def wait_job(self, job: str, timeout_s: float) -> str:
        """The job's final state (COMPLETED, FAILED, ...) once it leaves the queue."""
        deadline, state = time.monotonic() + timeout_s, "?"
        while time.monotonic() < deadline:
            done = self.run("scontrol", "show", "job", job, "--oneliner")
            fields = dict(f.split("=", 1) for f in done.stdout.split() if "=" in f)
            state = fields.get("JobState", state)
            if state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "?"):
                return state
            time.sleep(0.5)
        self.run("scancel", job)
        return f"TIMEOUT (last state {state})"

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
