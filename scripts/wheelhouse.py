"""Environment markers for a target Python, for scripts/build_wheelhouse.sh.

`pip download --python-version X.Y` picks wheels by X.Y's tags and Requires-Python, but evaluates
environment markers (`; python_version < "3.11"`) for the interpreter pip runs in: in the requirement
files and in every downloaded wheel's own dependencies. Built on 3.11, a 3.10 wheelhouse would lack
pytest's tomli and exceptiongroup, and carry what only 3.11 needs. This evaluates them for the target:

    wheelhouse.py pins FILE X.Y MIN     FILE's requirement lines for Python X.Y, comments and blank lines
                                        dropped, markers evaluated for X.Y and removed (a line whose
                                        marker is false is left out)
    wheelhouse.py missing DIR X.Y MIN   what DIR's wheels lack for X.Y: walking from DIR/requirements.txt
                                        and DIR/numpy.txt (with their dependencies, read from the wheels'
                                        METADATA) and DIR/requirements-no-deps.txt (without), the
                                        requirements no wheel satisfies, one per line
    wheelhouse.py unneeded DIR X.Y MIN  DIR's wheels that no requirement of that walk reaches, one per line

MIN is the oldest Python the project supports (pyproject.toml): python_full_version is MIN where
X.Y is MIN's, else X.Y.0. --platform TAG (a wheel platform tag, e.g. manylinux_2_28_aarch64) sets
platform_machine; the other markers are this machine's. Markers are parsed by packaging (pip's own
copy where packaging is not installed).
"""

import argparse
import email.parser
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

try:
    from packaging.markers import InvalidMarker, Marker, default_environment
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:  # pip is there: the build runs pip download
    from pip._vendor.packaging.markers import InvalidMarker, Marker, default_environment
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import Version

MACHINES = ("x86_64", "aarch64", "ppc64le", "s390x", "armv7l", "i686")
WITH_DEPS, WITHOUT_DEPS = ("requirements.txt", "numpy.txt"), ("requirements-no-deps.txt",)


def environment(version: str, minimum: str, platform: str | None = None) -> dict:
    """The marker environment of a Python X.Y other than this one."""
    full = minimum if minimum.startswith(version + ".") else version + ".0"
    env = {**default_environment(), "python_version": version, "python_full_version": full}
    env["implementation_version"] = full if env["implementation_name"] == "cpython" else env["implementation_version"]
    machine = next((m for m in MACHINES if platform and platform.endswith(m)), None)
    if machine:
        env["platform_machine"] = machine
    return env


def pins(path: Path, env: dict) -> list[str]:
    """The file's requirement lines for that environment, markers evaluated and removed."""
    kept = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        requirement, _, marker = re.sub(r"(^|\s)#.*", "", line).strip().partition(";")
        try:
            wanted = not marker.strip() or Marker(marker).evaluate(env)
        except InvalidMarker as err:
            raise SystemExit(f"build_wheelhouse: error: {path}:{number}: {err}") from None
        if requirement and wanted:
            kept.append(requirement.strip())
    return kept


@dataclass
class Wheel:
    path: Path
    name: str
    version: Version
    requires: list[Requirement]


def read_wheel(path: Path) -> Wheel:
    with zipfile.ZipFile(path) as whl:
        (metadata,) = [n for n in whl.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        headers = email.parser.Parser().parsestr(whl.read(metadata).decode("utf-8"), headersonly=True)
    requires = [Requirement(r) for r in headers.get_all("Requires-Dist") or []]
    return Wheel(path, canonicalize_name(headers["Name"]), Version(headers["Version"]), requires)


def without_marker(requirement: Requirement) -> Requirement:
    extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
    return Requirement(f"{requirement.name}{extras}{requirement.specifier}")


def walk(directory: Path, env: dict) -> tuple[list[str], set[Path]]:
    """(requirements no wheel of the directory satisfies, the wheels reached) from its lists."""
    wheels: dict[str, list[Wheel]] = {}
    for path in sorted(directory.glob("*.whl")):
        wheel = read_wheel(path)
        wheels.setdefault(wheel.name, []).append(wheel)
    queue = []  # (requirement, whether its dependencies are needed too)
    for names, deps in ((WITH_DEPS, True), (WITHOUT_DEPS, False)):
        lists = [directory / name for name in names if (directory / name).exists()]
        queue += [(Requirement(line), deps) for path in lists for line in pins(path, env)]
    missing, reached, seen = [], set(), set()
    while queue:
        requirement, deps = queue.pop(0)
        if (str(requirement), deps) in seen:
            continue
        seen.add((str(requirement), deps))
        found = [
            w
            for w in wheels.get(canonicalize_name(requirement.name), [])
            if requirement.specifier.contains(w.version, prereleases=True)
        ]
        if not found:
            missing.append(str(requirement))
            continue
        wheel = max(found, key=lambda w: w.version)
        reached.add(wheel.path)
        if not deps:
            continue
        extras = {""} | requirement.extras
        for child in wheel.requires:
            if child.marker is None or any(child.marker.evaluate({**env, "extra": e}) for e in extras):
                queue.append((without_marker(child), True))
    return list(dict.fromkeys(missing)), reached


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="wheelhouse.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("pins", "missing", "unneeded"))
    parser.add_argument("path", type=Path, help="a requirement file (pins) or a wheelhouse directory")
    parser.add_argument("version", help="the target Python, X.Y")
    parser.add_argument("minimum", help="the oldest Python the project supports, X.Y.Z")
    parser.add_argument("--platform", help="the target's wheel platform tag")
    args = parser.parse_args(argv)
    env = environment(args.version, args.minimum, args.platform)
    try:
        if args.command == "pins":
            lines = pins(args.path, env)
        else:
            missing, reached = walk(args.path, env)
            lines = (
                missing
                if args.command == "missing"
                else [str(p) for p in sorted(set(args.path.glob("*.whl")) - reached)]
            )
    except (InvalidRequirement, OSError, zipfile.BadZipFile, ValueError) as err:
        raise SystemExit(f"build_wheelhouse: error: {args.path}: {err}") from None
    if lines:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
