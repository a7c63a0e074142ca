#!/usr/bin/env bash
# Portable dataset check: ./verify_dataset.sh [--data-dir DIR (default ./LibriSpeech_dataset)] [--jobs N]
# Exit 0 = passed, 1 = failed.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# DS2_PYTHON (set in the Docker image) wins over a .venv that a host may have left in the mounted repo.
PY=${DS2_PYTHON:-$HERE/.venv/bin/python}
[[ -x $PY ]] || command -v "$PY" >/dev/null || PY=python3
# -P: never import a data/ or pytorch/ folder from the caller's directory; the package is installed.
exec "$PY" -P -m data.verify "$@"
