#!/usr/bin/env bash
# Portable dataset check: ./verify_dataset.sh [--data-dir DIR (default ./LibriSpeech_dataset)] [--jobs N]
# Exit 0 = passed, 1 = failed.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=$HERE/.venv/bin/python
[[ -x $PY ]] || PY=python3
# -P: never import a data/ or pytorch/ folder from the caller's directory; the package is installed.
exec "$PY" -P -m data.verify "$@"
