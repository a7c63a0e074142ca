#!/usr/bin/env bash
# Download, verify, extract and prepare LibriSpeech: a thin wrapper over `python -m data.download`.
# Usage: ./download_dataset.sh [--data-dir DIR] [--subsets a,b] [--jobs N] [key=value ...]; see --help.
# DIR defaults to $DS2_DATA_DIR if set, else LibriSpeech_dataset in this repository (wherever you run it).
# --lm also (without --subsets: only) fetches LibriSpeech's LM files (openslr 11) into DIR/lm, md5-checked:
# by default 3-gram.pruned.1e-7.arpa.gz and librispeech-vocab.txt; --lm-files a,b (or all) picks others.
# Exit 0 = done, 1 = error (a second run on the same DIR stops at once, naming the first), 2 = bad usage.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# DS2_PYTHON (set in the Docker image) wins over a .venv that a host may have left in the mounted repo.
PY=${DS2_PYTHON:-$HERE/.venv/bin/python}
[[ -x $PY ]] || command -v "$PY" >/dev/null || PY=python3
# scripts/safepath.py is python -P on 3.10 too: never import a data/ or pytorch/ folder from the caller's
# directory; the package is installed.
exec "$PY" "$HERE/scripts/safepath.py" -m data.download "$@"
