#!/usr/bin/env bash
# Proves a CUDA machine in about 10 minutes, offline: a thin wrapper over `python -m bench.gpu_check`.
# Usage: scripts/gpu-check.sh [--out DIR] [--skip tests,sweep,train] [--quick]; see --help.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# DS2_PYTHON (set in the Docker image) wins over a .venv; on a bare GPU machine: its python3, whose torch is kept.
PY=${DS2_PYTHON:-$HERE/.venv/bin/python}
[[ -x $PY ]] || command -v "$PY" >/dev/null || PY=python3
# -P: never import a data/ or pytorch/ folder from the caller's directory; the package is installed.
exec "$PY" -P -m bench.gpu_check "$@"
