#!/usr/bin/env bash
# Portable dataset check: ./verify_dataset.sh [--data-dir DIR] [--jobs N (hashing processes)]
# DIR defaults to $DS2_DATA_DIR if set, else LibriSpeech_dataset in this repository (wherever you run it).
# Exit 0 = passed, 1 = failed (or the directory is missing or in use by a download), 2 = bad usage.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# DS2_PYTHON (set in the Docker image) wins over a .venv that a host may have left in the mounted repo.
PY=${DS2_PYTHON:-$HERE/.venv/bin/python}
[[ -x $PY ]] || command -v "$PY" >/dev/null || PY=python3
# scripts/safepath.py is python -P on 3.10 too: never import a data/ or pytorch/ folder from the caller's
# directory; the package is installed.
exec "$PY" "$HERE/scripts/safepath.py" -m data.verify "$@"
