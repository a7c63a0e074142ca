"""`python -P` on every Python the project supports (-P is new in 3.11): the wrappers' way to run a module.

    "$PY" scripts/safepath.py -m MODULE [ARG...]   as `python -P -m MODULE [ARG...]`
    "$PY" scripts/safepath.py -c CODE [ARG...]     as `python -P -c CODE [ARG...]`

Neither the caller's working directory nor this script's directory is on sys.path, so a data/,
pytorch/ or params.py there is never imported in place of the installed project (which must be
installed: make setup, scripts/install_wheelhouse.sh). Python never puts the working directory on
sys.path for a script, only the script's own directory, first (unless -P, -I or PYTHONSAFEPATH kept it
off): that entry is removed. Then the module runs as `-m` runs it (runpy: as __main__, sys.argv[0] its
file), or the code as `-c` runs it.
"""

import os
import runpy
import sys

USAGE = "usage: safepath.py -m MODULE [ARG...] | -c CODE [ARG...]"


def main() -> None:
    if sys.path and os.path.realpath(sys.path[0]) == os.path.dirname(os.path.realpath(__file__)):
        del sys.path[0]  # this script's directory
    if len(sys.argv) < 3 or sys.argv[1] not in ("-m", "-c"):
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    mode, target = sys.argv[1], sys.argv[2]
    if mode == "-m":
        sys.argv[:] = [target, *sys.argv[3:]]  # runpy sets argv[0] to the module's file, as -m does
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.argv[:] = ["-c", *sys.argv[3:]]
        exec(compile(target, "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})


if __name__ == "__main__":
    main()
