#!/usr/bin/env bash
# Portable dataset check: ./verify_dataset.sh [--data-dir DIR (default ./LibriSpeech_dataset)] [--jobs N]
# Relative --data-dir paths are taken from the repository root. Exit 0 = passed, 1 = failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
exec "$PY" -m data.verify "$@"
