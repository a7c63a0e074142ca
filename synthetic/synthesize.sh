#!/usr/bin/env bash
# Synthesise a LibriSpeech-format corpus with espeak-ng: see `synthetic/synthesize.sh --help`.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# DS2_PYTHON (set in the Docker image) wins over a .venv that a host may have left in the mounted repo.
PY=${DS2_PYTHON:-$HERE/.venv/bin/python}
[[ -x $PY ]] || command -v "$PY" >/dev/null || PY=python3
# scripts/safepath.py is python -P on 3.10 too: never import a synthetic/ or data/ folder from the caller's
# directory; the package is installed.
exec "$PY" "$HERE/scripts/safepath.py" -m synthetic.corpus "$@"
