#!/usr/bin/env bash
# Download, verify, extract and prepare LibriSpeech: a thin wrapper over `python -m data.download`.
# Usage: ./download_dataset.sh [--data-dir DIR] [--subsets a,b] [--jobs N] [key=value ...]; see --help.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
exec "$PY" -m data.download "$@"
