#!/usr/bin/env bash
# Installs, offline, what `make wheelhouse` built into this GPU machine's Python, and the project
# itself (editable), never touching its torch, nor its numpy where it has one. Then: make gpu-check.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MIN_TORCH=2.11

usage() {
  cat <<EOF
usage: scripts/install_wheelhouse.sh [--wheelhouse DIR] [--python PY]

Installs the wheels of DIR (default <repo>/wheelhouse/pythonX.Y, X.Y being PY's version) with
pip install --no-index --find-links DIR, and the project with pip install --no-deps -e <repo>, into
PY. PY must already have torch >= ${MIN_TORCH}, which is kept as it is (pinned for pip, checked
afterwards); a torch older than ${MIN_TORCH} is refused before anything is installed. PY's numpy is
kept as well; where PY has none (torch's metadata does not list numpy), the wheelhouse's pinned numpy
is installed first. Last, it checks that torch and numpy work together (torch.from_numpy) and that
the project imports.

  --wheelhouse DIR   the wheelhouse (build it with 'make wheelhouse PYTHON=X.Y' where there is internet)
  --python PY        the interpreter (default \$DS2_PYTHON, else <repo>/.venv/bin/python, else python3:
                     the one scripts/gpu-check.sh uses)
  -h, --help         show this help and exit
An externally managed Python (pip refuses it, PEP 668): make a venv that sees its torch, and use it
for both steps: python3 -m venv --system-site-packages ~/ds2-venv
  DS2_PYTHON=~/ds2-venv/bin/python scripts/install_wheelhouse.sh && DS2_PYTHON=~/ds2-venv/bin/python make gpu-check
EOF
}

die() {
  echo "install_wheelhouse: error: $1" >&2
  exit "${2:-1}"
}

PY=${DS2_PYTHON:-$HERE/.venv/bin/python}
[[ -x $PY ]] || command -v "$PY" >/dev/null || PY=python3
wheelhouse=''
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --wheelhouse | --python)
      [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (see --help)" 2
      if [[ $1 == --python ]]; then PY=$2; else wheelhouse=$2; fi
      shift ;;
    *) die "unknown argument $1 (see --help)" 2 ;;
  esac
  shift
done
command -v "$PY" >/dev/null || die "$PY: no such python (--python PY or DS2_PYTHON=PY)" 2

# version MODULE: the installed version of a module, or nothing.
version() {
  "$PY" -c "import $1; print($1.__version__)" 2>/dev/null || true
}

# installed DISTRIBUTION: its version as pip sees it (installed, whether or not it imports), or nothing.
installed() {
  "$PY" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || true
}

torch_version=$(version torch)
[[ -n $torch_version ]] || die "$PY has no torch (import torch fails): this script never installs torch; use the python that has this machine's torch (--python PY)"
"$PY" - "$torch_version" "$MIN_TORCH" <<'EOF' || die "torch $torch_version in $PY is older than $MIN_TORCH, the oldest this benchmark supports (it needs torch.backends' fp32_precision API and cuDNN's bf16 GRUs); this script never replaces torch: use a python with torch >= $MIN_TORCH"
import sys
def major_minor(v):
    return tuple(int(part) for part in v.split("+")[0].split(".")[:2])
sys.exit(0 if major_minor(sys.argv[1]) >= major_minor(sys.argv[2]) else 1)
EOF

python_version=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
wheelhouse=${wheelhouse:-$HERE/wheelhouse/python$python_version}
[[ -f $wheelhouse/requirements.txt ]] || die "no wheelhouse for Python $python_version at $wheelhouse: on a machine with internet run 'make wheelhouse PYTHON=$python_version' and copy its wheelhouse/ directory here"

pip=("$PY" -m pip install --quiet --no-index --find-links "$wheelhouse" --disable-pip-version-check)
pip_failed() {
  die "pip install failed (see above). A conflict with torch==$torch_version or numpy==${numpy_version:-?} means a wheel of the wheelhouse needs another version than this machine's own, which this script keeps. If pip refused an externally managed Python, see --help (a venv with --system-site-packages)"
}

# The machine's torch (and below its numpy), pinned. This constraint file replaces any PIP_CONSTRAINT
# (NGC images pin numpy, PyYAML, ... to their own versions, which would refuse the repo's pins),
# keeping only its torch, triton and nvidia-* lines.
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
{ echo "torch==$torch_version"
  if [[ -n ${PIP_CONSTRAINT:-} && -f $PIP_CONSTRAINT ]]; then grep -iE '^(torch|triton|nvidia-)' "$PIP_CONSTRAINT" | grep -iv '^torch[=<>~! ]' || true; fi
} >"$constraints"

# An installed numpy is kept whatever its version (it is the machine's, as its torch is); pip sees
# it even where it fails to import, and the check at the end names that.
numpy_version=$(installed numpy)
numpy_note="numpy $numpy_version kept"
if [[ -z $numpy_version ]]; then
  [[ -s $wheelhouse/numpy.txt ]] || die "$PY has no numpy and $wheelhouse carries none (no numpy.txt: built by an older build_wheelhouse.sh); rebuild it with 'make wheelhouse PYTHON=$python_version'"
  echo "install_wheelhouse: $PY has no numpy: installing the wheelhouse's $(cat "$wheelhouse/numpy.txt")"
  PIP_CONSTRAINT=$constraints "${pip[@]}" --no-deps -r "$wheelhouse/numpy.txt" || pip_failed
  numpy_version=$(installed numpy)
  numpy_note="numpy $numpy_version installed from the wheelhouse"
fi
echo "numpy==$numpy_version" >>"$constraints"

echo "install_wheelhouse: installing $wheelhouse into $PY (Python $python_version, torch $torch_version kept, $numpy_note)"
PIP_CONSTRAINT=$constraints "${pip[@]}" -r "$wheelhouse/requirements.txt" || pip_failed
PIP_CONSTRAINT=$constraints "${pip[@]}" --no-deps -r "$wheelhouse/requirements-no-deps.txt" || pip_failed
# The project itself, so that every script's `scripts/safepath.py -m ...` (python -P) finds it from any
# directory; pip builds it with the wheelhouse's setuptools.
PIP_CONSTRAINT=$constraints "${pip[@]}" --no-deps -e "$HERE" || pip_failed

[[ $(version torch) == "$torch_version" && $(installed numpy) == "$numpy_version" ]] ||
  die "torch or numpy changed (torch $torch_version -> $(version torch), numpy $numpy_version -> $(installed numpy)): not this script's intent; reinstall the machine's own"
# A numpy that torch was not built for imports, but torch cannot hand arrays to it ("Numpy is not
# available"): the loader and the features need exactly this.
SAFE=("$PY" "$HERE/scripts/safepath.py") # python -P on 3.10 too: the installed project, not the caller's folders
"${SAFE[@]}" -c 'import numpy, torch; torch.from_numpy(numpy.zeros(3))' ||
  die "torch $torch_version cannot use numpy $numpy_version in $PY (torch.from_numpy fails, see above): install the numpy this torch was built with"
"${SAFE[@]}" -c 'import soundfile, soxr, Levenshtein, tqdm, requests, yaml, pytest, mlperf_logging.mllog
import params, data, pytorch, bench.gpu_check
from synthetic import espeak
espeak.load()' || die "installed, but the imports above fail in $PY"
# The wheelhouse leaves matplotlib out (build_wheelhouse.sh): the curves are then in TensorBoard's files only.
"${SAFE[@]}" -c 'import matplotlib' 2>/dev/null ||
  echo "install_wheelhouse: note: no matplotlib, so training draws no curves.png; the same curves are in each results directory's tensorboard/ event files"
echo "install_wheelhouse: done; next: make gpu-check$([[ $PY == python3 ]] || echo " (DS2_PYTHON=$PY if it is not the default)")"
