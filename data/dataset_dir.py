"""The prepared dataset directory: the one module that knows its layout and its records.

    archives/<subset>.tar.gz            downloaded archive (<subset>.tar.gz.part while in flight)
    .extract-<subset>.tmp.<host>.<pid>.<token>/   one run's extraction, moved into place when complete
    LibriSpeech/<subset>/<spk>/<chap>/  extracted audio and transcripts, exactly as in the archive
    features/<subset>/<spk>-<chap>.npy  float16 array (frames of all utterances of the chapter, n_features)
    features/features.json              the feature config the shards were made with
    features/<subset>/statistics.json   the subset's frame count and per-bin sums and sums of squares of its
                                        stored features (float64; data.normalization; normalization=global)
    manifests/<name>.jsonl              one row per utterance (data.manifest), ascending (duration, id);
                                        <name> is a subset or a split (train, val, test: the merge of its subsets)
    checksums/<subset>.sha256           sha256sum-format record of every file of the subset (audio,
                                        transcripts, feature shards, manifest) and of features.json
    .state/<stage>-<subset>.done        stage markers: download (holds the verified md5 line), extract, prepare
    lm/<file>                           LibriSpeech's language-model files (openslr 11; download_dataset.sh --lm),
                                        <file>.part while in flight
    .state/lm-<file>.done               holds the verified md5 line of lm/<file>
    .lock                               held by the run using the directory (download, prepare: alone;
                                        verify: with other verifies); names that run

download, extraction, prepare, verify and the training loader ask this module for every path, marker,
the feature config and the checksum records; what a manifest row holds is data.manifest's job.
Standard library only: verify imports it before it starts hashing.
"""

import fcntl
import json
import os
import re
import shlex
import socket
import sys
import time
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from data.files import naming, temp_name, write_atomically
from data.librispeech import SUBSETS
from exit_status import Failure

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR_VARIABLE = "DS2_DATA_DIR"
STAGES = ("download", "extract", "prepare")
# The directories of the layout above, relative to the dataset directory.
ARCHIVES = "archives"
AUDIO = "LibriSpeech"
FEATURES = "features"
MANIFESTS = "manifests"
CHECKSUMS = "checksums"
STATE = ".state"
LM = "lm"
FEATURE_CONFIG = f"{FEATURES}/features.json"
FEATURE_SUMS = "statistics.json"  # in features/<subset>/, beside its shards
LOCK = ".lock"


class DatasetError(Failure):
    """Something in the dataset directory is missing, malformed or in use; the message names it."""


class FeatureConfigError(DatasetError):
    """The features were prepared with other feature parameters; the message names the keys."""


class DatasetBusy(DatasetError):
    """Another run holds the dataset directory's lock; the message names that run."""


def default_data_dir() -> Path:
    """The dataset directory every script uses by default: $DS2_DATA_DIR if set, else
    LibriSpeech_dataset in the repository (where the scripts live), whatever the current directory.
    (The Docker image mounts the dataset there.)"""
    return Path(os.environ.get(DATA_DIR_VARIABLE) or REPO_ROOT / "LibriSpeech_dataset")


def add_data_dir_argument(parser) -> None:
    """--data-dir as every command takes it: a Path, default_data_dir() when not given."""
    now = default_data_dir()
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=now,
        help=f"dataset directory (default: ${DATA_DIR_VARIABLE} if set, else LibriSpeech_dataset in the "
        f"repository, whatever the current directory; now {str(now).replace('%', '%%')})",  # argparse %-formats help
    )


# ---------------------------------------------------------------- layout


def audio_dir(subset: str) -> str:
    """LibriSpeech/<subset>: the extracted subset, relative to the dataset directory (and so inside
    an archive, whose top directory is LibriSpeech/ too)."""
    return f"{AUDIO}/{subset}"


def shard_of(chapter: str) -> str:
    """LibriSpeech/<subset>/<spk>/<chap> -> features/<subset>/<spk>-<chap>.npy (relative paths)."""
    _, subset, speaker, chap = PurePosixPath(chapter).parts
    return f"{FEATURES}/{subset}/{speaker}-{chap}.npy"


def feature_sums_of(subset: str) -> str:
    """features/<subset>/statistics.json (relative): what combines into a split's feature statistics."""
    return f"{FEATURES}/{subset}/{FEATURE_SUMS}"


def manifest_of(name: str) -> str:
    return f"{MANIFESTS}/{name}.jsonl"


def checksums_of(subset: str) -> str:
    return f"{CHECKSUMS}/{subset}.sha256"


def _official_first(subsets: Iterable[str]) -> list[str]:
    """Subset names: the official ones in their official order, then any others sorted."""
    subsets = set(subsets)
    return [s for s in SUBSETS if s in subsets] + sorted(subsets - set(SUBSETS))


class DatasetDir:
    """Paths, stage markers, the feature config and the lock of one dataset directory."""

    def __init__(self, root):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"DatasetDir({str(self.root)!r})"

    def path(self, relative: str) -> Path:
        return self.root / relative

    def archive(self, subset: str) -> Path:
        return self.root / ARCHIVES / f"{subset}.tar.gz"

    def part(self, subset: str) -> Path:
        """Where the archive streams to while it downloads (resumed from its size)."""
        return self.root / ARCHIVES / f"{subset}.tar.gz.part"

    def new_extraction_dir(self, subset: str) -> Path:
        """A name for this run's extraction of the subset, used by no other run (it is not created)."""
        return temp_name(self.root / f"extract-{subset}")

    def extraction_dirs(self, subset: str) -> list[Path]:
        """Temporary extraction directories of the subset (one per run: .extract-<subset>.tmp.*)."""
        return sorted(self.root.glob(f".extract-{subset}.tmp*"))

    @property
    def librispeech(self) -> Path:
        """LibriSpeech/: the extracted subsets and the archives' top-level *.TXT files."""
        return self.root / AUDIO

    def audio(self, subset: str) -> Path:
        return self.root / audio_dir(subset)

    def features(self, subset: str) -> Path:
        return self.root / FEATURES / subset

    def feature_sums(self, subset: str) -> Path:
        return self.root / feature_sums_of(subset)

    def manifest(self, name: str) -> Path:
        return self.root / manifest_of(name)

    def existing_manifest(self, name: str) -> Path:
        """manifests/<name>.jsonl; DatasetError if it does not exist."""
        path = self.manifest(name)
        if not path.is_file():
            raise DatasetError(f"{path}: no such manifest; prepare the data first with ./download_dataset.sh")
        return path

    def checksums(self, subset: str) -> Path:
        return self.root / checksums_of(subset)

    def recorded_subsets(self) -> list[str]:
        """The subsets with a checksums/<subset>.sha256 record, sorted."""
        return sorted(path.stem for path in (self.root / CHECKSUMS).glob("*.sha256"))

    @property
    def feature_config(self) -> Path:
        return self.root / FEATURE_CONFIG

    # ------------------------------------------------------------ language-model files

    @property
    def lm_dir(self) -> Path:
        return self.root / LM

    def lm_file(self, name: str) -> Path:
        return self.root / LM / name

    def lm_part(self, name: str) -> Path:
        """Where an LM file streams to while it downloads (resumed from its size)."""
        return self.root / LM / f"{name}.part"

    def lm_marker(self, name: str) -> Path:
        """The record of a downloaded LM file: its verified md5 line."""
        return self.root / STATE / f"lm-{name}.done"

    def recorded_lm_files(self) -> list[str]:
        """The LM files with a download record, sorted."""
        prefix, suffix = "lm-", ".done"
        return sorted(p.name[len(prefix) : -len(suffix)] for p in self.root.glob(f"{STATE}/{prefix}*{suffix}"))

    # ------------------------------------------------------------ stage markers

    def marker(self, stage: str, subset: str) -> Path:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
        return self.root / STATE / f"{stage}-{subset}.done"

    def is_marked(self, stage: str, subset: str) -> bool:
        return self.marker(stage, subset).is_file()

    def marker_text(self, stage: str, subset: str) -> str | None:
        """What the marker holds (the download marker: the verified md5 line), None if unmarked."""
        try:
            return self.marker(stage, subset).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None

    def mark(self, stage: str, subset: str, text: str = "") -> None:
        """Record that the stage completed; written only after the stage's work is all in place."""
        write_atomically(self.marker(stage, subset), text)

    def unmark(self, stage: str, subset: str) -> None:
        self.marker(stage, subset).unlink(missing_ok=True)

    def marked(self, stage: str) -> list[str]:
        """Subsets whose stage is marked done (official ones first, in the official order)."""
        self.marker(stage, "")  # checks the stage name
        prefix, suffix = f"{stage}-", ".done"
        return _official_first(p.name[len(prefix) : -len(suffix)] for p in self.root.glob(f"{STATE}/{prefix}*{suffix}"))

    # ------------------------------------------------------------ feature config

    def read_feature_config(self) -> dict:
        """The recorded feature config; DatasetError naming the file if missing or malformed."""
        path = self.feature_config
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DatasetError(f"{path}: missing; prepare the data first with ./download_dataset.sh") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DatasetError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(stored, dict):
            raise DatasetError(f"{path}: expected a JSON object, found {type(stored).__name__}")
        return stored

    def record_feature_config(self, config: dict) -> None:
        write_atomically(self.feature_config, feature_config_text(config))

    def check_feature_config(self, wanted: dict, advice: str) -> None:
        """FeatureConfigError naming every differing key unless the recorded config equals `wanted`."""
        differing = feature_config_differences(self.read_feature_config(), wanted)
        if differing:
            raise FeatureConfigError(
                f"{self.feature_config}: the features were prepared with other feature parameters "
                f"({', '.join(differing)}); {advice}"
            )

    # ------------------------------------------------------------ the lock

    @contextmanager
    def lock(self, command: str, shared: bool = False):
        """Hold the directory's lock while the block runs: exclusively for a run that writes
        (download, prepare), shared for one that only reads (verify).

        A second run does not wait: it fails at once with DatasetBusy naming the run that holds the
        lock (pid, host, command, since when: written into the lock file by each holder). Waiting
        would look like a hang for hours behind a download; stopping says what to do.

        flock(2) locks are released by the kernel when their holder exits, however it exits, so a
        killed run never leaves the directory locked. On NFS (v4) flock works across hosts; on
        Lustre it needs the `flock` mount option. A reader on a read-only directory goes unlocked.
        """
        fd = self._open_lock(shared)
        try:
            if fd is not None:
                self._acquire(fd, command, shared)
            yield
        finally:
            if fd is not None:
                os.close(fd)  # releases the lock

    def _open_lock(self, shared: bool) -> int | None:
        path = self.root / LOCK
        try:
            with naming(path):
                self.root.mkdir(parents=True, exist_ok=True)
                return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            if not shared:
                raise
        try:  # a reader without write access to the directory
            return os.open(path, os.O_RDONLY)
        except OSError:
            return None

    def _acquire(self, fd: int, command: str, shared: bool) -> None:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatasetBusy(
                f"{self.root} is in use by another run: {self._holder(fd)}; wait for it to end (or stop it), "
                "then run this again (two runs on one dataset directory would corrupt it)"
            ) from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": command,
        }
        try:  # in place: a rename would put the name on another file than the one locked
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        except OSError:
            pass  # a read-only lock file: the lock holds, only its holder goes unnamed

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            holder = json.loads(os.pread(fd, 4096, 0))
            return f"{holder['command']} (pid {holder['pid']} on {holder['host']}, since {holder['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "a run that has not named itself yet"


def command_line(prog: str, argv: list[str] | None) -> str:
    """How a run is named in the lock file: its program name and arguments, shell-quoted."""
    return shlex.join([prog, *(sys.argv[1:] if argv is None else argv)])


def feature_config_text(config: dict) -> str:
    return json.dumps(config, indent=1, sort_keys=True) + "\n"


def feature_config_differences(stored: dict, wanted: dict) -> list[str]:
    """'key: data X vs params Y' for every key whose value differs (or exists on one side only)."""
    keys = sorted(wanted.keys() | stored.keys())
    return [f"{k}: data {stored.get(k)!r} vs params {wanted.get(k)!r}" for k in keys if stored.get(k) != wanted.get(k)]


# ---------------------------------------------------------------- checksum records


def checksum_text(hashes: Iterable[tuple[str, str]]) -> str:
    """sha256sum -c format, sorted by path: '<sha256>  <relative path>' per line."""
    return "".join(f"{digest}  {path}\n" for path, digest in sorted(hashes))


_SHA256 = re.compile(r"[0-9a-f]{64}")


def parse_checksum_line(line: str) -> tuple[str, str] | None:
    """(relative path, sha256) of a record line, None if it is malformed or names a path outside.

    String checks only: verify reads one line per file of the dataset (about 300,000 for LibriSpeech).
    """
    digest, sep, name = line.partition("  ")
    if not sep or not _SHA256.fullmatch(digest) or not is_inside(name):
        return None
    return name, digest


def is_inside(relative: str) -> bool:
    """Whether a relative POSIX path names something inside the dataset directory."""
    return bool(relative) and not relative.startswith("/") and "\\" not in relative and ".." not in relative.split("/")
