"""scripts/safepath.py, the wrappers' `python -P` on every supported Python (3.10 has no -P): a data/,
pytorch/, ... folder in the caller's working directory is never imported in place of the project."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAFEPATH = REPO / "scripts" / "safepath.py"
# Every wrapper that runs the project's Python from wherever its caller is.
WRAPPERS = [
    "download_dataset.sh",
    "run_and_time.sh",
    "verify_dataset.sh",
    "synthetic/synthesize.sh",
    "scripts/gpu-check.sh",
    "scripts/install_wheelhouse.sh",
]
TRAP = "TRAPPED: imported from the working directory"


def trap_directory(path: Path) -> Path:
    """A working directory whose data/, pytorch/, ... and params.py stop any process importing them."""
    path.mkdir()
    trap = f"import sys\nsys.exit({TRAP!r})\n"
    for package in ("data", "pytorch", "synthetic", "bench", "presets"):
        (path / package).mkdir()
        (path / package / "__init__.py").write_text(trap)
    for module in ("params", "exit_status"):
        (path / f"{module}.py").write_text(trap)
    return path


def run(args, cwd: Path, env=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env or os.environ.copy()
    )


@pytest.mark.parametrize("wrapper", [w for w in WRAPPERS if w != "scripts/install_wheelhouse.sh"])
def test_a_wrapper_run_from_a_directory_with_project_named_folders_imports_the_project(wrapper, tmp_path):
    done = run([REPO / wrapper, "--help"], trap_directory(tmp_path / "work"))
    assert done.returncode == 0 and TRAP not in done.stderr, done.stderr[-2000:]
    assert "usage:" in done.stdout.lower()


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_every_wrapper_runs_the_project_through_safepath_and_never_with_dash_p(wrapper):
    text = (REPO / wrapper).read_text()
    assert "scripts/safepath.py" in text
    assert not re.search(r'"\$PY" -P\b', text)  # a 3.10 python stops at once: "Unknown option: -P"
    # "$PY" -m or -c would put the working directory first on sys.path
    project = r"(params|exit_status|data|pytorch|synthetic|bench|presets)\b"
    assert not re.search(rf'"\$PY" -m {project}', text)
    assert not re.search(rf'"\$PY" -c .(import|from) {project}', text)


def test_a_module_runs_as_python_dash_m_runs_it_without_the_working_directory(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "probe.py").write_text(
        "import json, sys, data\n"
        "print(json.dumps({'name': __name__, 'argv': sys.argv, 'data': data.__file__, 'path': sys.path}))\n"
        "sys.exit(5)\n"
    )
    work = trap_directory(tmp_path / "work")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(lib), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = run([sys.executable, SAFEPATH, "-m", "probe", "a", "--b"], work, env)
    assert done.returncode == 5 and TRAP not in done.stderr, done.stderr
    seen = json.loads(done.stdout)
    assert seen["name"] == "__main__" and seen["argv"] == [str(lib / "probe.py"), "a", "--b"]
    assert seen["data"] == str(REPO / "data" / "__init__.py")  # the project's, not the trap
    assert not {"", str(work), str(SAFEPATH.parent)} & set(seen["path"])


def test_code_runs_as_python_dash_c_runs_it_with_the_path_python_dash_p_gives(tmp_path):
    work = trap_directory(tmp_path / "work")
    code = "import json, sys, data; print(json.dumps({'argv': sys.argv, 'name': __name__, 'path': sys.path}))"
    for env in (os.environ.copy(), {**os.environ, "PYTHONSAFEPATH": "1"}):
        done = run([sys.executable, SAFEPATH, "-c", code, "x", "y"], work, env)
        assert done.returncode == 0 and TRAP not in done.stderr, done.stderr
        seen = json.loads(done.stdout)
        assert seen["argv"] == ["-c", "x", "y"] and seen["name"] == "__main__"
        # python -c's own path, less the working directory it puts first (where PYTHONSAFEPATH does not)
        plain = run([sys.executable, "-c", "import json, sys; print(json.dumps(sys.path))"], tmp_path, env)
        assert seen["path"] == [p for p in json.loads(plain.stdout) if p not in ("", str(tmp_path))]


def test_a_module_run_through_safepath_can_use_spawned_workers(tmp_path):
    """synthetic/corpus.py spawns its workers: they re-import the module run as __main__ by name."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "spawner.py").write_text(
        "import multiprocessing\n\n"
        "def square(x):\n    return x * x\n\n"
        "if __name__ == '__main__':\n"
        "    with multiprocessing.get_context('spawn').Pool(2) as pool:\n"
        "        print(sum(pool.map(square, range(10))))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(lib)}
    done = run([sys.executable, SAFEPATH, "-m", "spawner"], trap_directory(tmp_path / "work"), env)
    assert done.returncode == 0 and done.stdout.strip() == "285", done.stderr[-2000:]


@pytest.mark.parametrize("args", [[], ["-m"], ["-x", "data.verify"]])
def test_bad_usage_exits_2(args, tmp_path):
    done = run([sys.executable, SAFEPATH, *args], tmp_path)
    assert done.returncode == 2 and "usage: safepath.py -m MODULE" in done.stderr
