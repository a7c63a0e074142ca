#!/usr/bin/env bash
# Proves a CUDA machine in at most 10 minutes, offline: a thin wrapper over `python -m bench.gpu_check`.
# Usage: scripts/gpu-check.sh [--out DIR] [--skip tests,sweep,train] [--quick]; see --help.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# DS2_PYTHON (set in the Docker image) wins over a .venv; on a bare GPU machine: its python3, whose torch is kept.
PY=${DS2_PYTHON:-$HERE/.venv/bin/python}
[[ -x $PY ]] || command -v "$PY" >/dev/null || PY=python3
command -v "$PY" >/dev/null || {
  echo "gpu-check: error: no python: $PY not found (DS2_PYTHON=PY names one)" >&2
  exit 1
}
# scripts/safepath.py is python -P on 3.10 too: never import a data/ or pytorch/ folder from the
# caller's directory. So the project must be installed in $PY, as every script it runs (demo.sh,
# run_and_time.sh, ...) expects too. scripts/install_wheelhouse.sh does that; where it has not run,
# the editable install is done here, offline, with $PY's own setuptools.
SAFE=("$PY" "$HERE/scripts/safepath.py")
if ! "${SAFE[@]}" -c 'import bench.gpu_check' 2>/dev/null; then
  echo "gpu-check: installing the project into $PY: pip install --no-deps --no-index --no-build-isolation -e $HERE"
  if ! "$PY" -m pip install -q --no-deps --no-index --no-build-isolation -e "$HERE" ||
    ! "${SAFE[@]}" -c 'import bench.gpu_check'; then
    echo "gpu-check: error: the project is not importable by $PY (scripts/safepath.py -c 'import bench.gpu_check' fails)." >&2
    echo "gpu-check: on an offline GPU machine run scripts/install_wheelhouse.sh first (the wheels of" >&2
    echo "gpu-check: 'make wheelhouse' and the project, keeping this machine's torch), then make gpu-check." >&2
    exit 1
  fi
fi
exec "${SAFE[@]}" -m bench.gpu_check "$@"
