"""The prepared dataset directory: the one module that knows its layout, its records and its rows.

    archives/<subset>.tar.gz            downloaded archive (<subset>.tar.gz.part while in flight)
    LibriSpeech/<subset>/<spk>/<chap>/  extracted audio and transcripts, exactly as in the archive
    features/<subset>/<spk>-<chap>.npy  float16 array (frames of all utterances of the chapter, n_features)
    features/features.json              the feature config the shards were made with
    manifests/<name>.jsonl              one row per utterance, ascending (duration, id); <name> is a
                                        subset or a split (train, val, test: the merge of its subsets)
    checksums/<subset>.sha256           sha256sum-format record of every file of the subset (audio,
                                        transcripts, feature shards, manifest) and of features.json
    .state/<stage>-<subset>.done        stage markers: download (holds the verified md5 line), extract, prepare
    .lock                               held by the run using the directory (download, prepare: alone;
                                        verify: with other verifies); names that run

download, prepare, verify and the training loader ask this module for every path, marker, the
feature config, the manifest row (made, parsed and validated here) and the split merge.
"""

import fcntl
import heapq
import json
import math
import os
import re
import shlex
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import numpy as np

from data.files import naming, write_atomically
from data.librispeech import SPLITS, SUBSETS
from exit_status import Failure

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR_VARIABLE = "DS2_DATA_DIR"
STAGES = ("download", "extract", "prepare")
FEATURE_CONFIG = "features/features.json"
LOCK = ".lock"


class DatasetError(Failure):
    """Something in the dataset directory is missing, malformed or in use; the message names it."""


class ManifestError(DatasetError):
    """A malformed manifest row; the message names the file and line."""


class FeatureConfigError(DatasetError):
    """The features were prepared with other feature parameters; the message names the keys."""


class DatasetBusy(DatasetError):
    """Another run holds the dataset directory's lock; the message names that run."""


class RowError(ValueError):
    """What is wrong with one manifest row (without where it is: the caller knows the file and line)."""


def default_data_dir() -> Path:
    """The dataset directory every script uses by default: $DS2_DATA_DIR if set, else
    LibriSpeech_dataset in the repository (where the scripts live), whatever the current directory.
    (The Docker image mounts the dataset there.)"""
    return Path(os.environ.get(DATA_DIR_VARIABLE) or REPO_ROOT / "LibriSpeech_dataset")


def add_data_dir_argument(parser) -> None:
    """--data-dir as every script takes it: None when not given (then use default_data_dir())."""
    now = str(default_data_dir()).replace("%", "%%")  # argparse %-formats help texts
    parser.add_argument(
        "--data-dir",
        type=Path,
        help=f"dataset directory (default: ${DATA_DIR_VARIABLE} if set, else LibriSpeech_dataset in the "
        f"repository, whatever the current directory; now {now})",
    )


# ---------------------------------------------------------------- layout


def audio_dir(subset: str) -> str:
    """LibriSpeech/<subset>: the extracted subset, relative to the dataset directory."""
    return f"LibriSpeech/{subset}"


def shard_of(chapter: str) -> str:
    """LibriSpeech/<subset>/<spk>/<chap> -> features/<subset>/<spk>-<chap>.npy (relative paths)."""
    _, subset, speaker, chap = PurePosixPath(chapter).parts
    return f"features/{subset}/{speaker}-{chap}.npy"


def manifest_of(name: str) -> str:
    return f"manifests/{name}.jsonl"


def checksums_of(subset: str) -> str:
    return f"checksums/{subset}.sha256"


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
        return self.root / "archives" / f"{subset}.tar.gz"

    def part(self, subset: str) -> Path:
        """Where the archive streams to while it downloads (resumed from its size)."""
        return self.root / "archives" / f"{subset}.tar.gz.part"

    def extraction_dirs(self, subset: str) -> list[Path]:
        """Temporary extraction directories of the subset (one per run: .extract-<subset>.tmp.*)."""
        return sorted(self.root.glob(f".extract-{subset}.tmp*"))

    def audio(self, subset: str) -> Path:
        return self.root / audio_dir(subset)

    def features(self, subset: str) -> Path:
        return self.root / "features" / subset

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

    @property
    def feature_config(self) -> Path:
        return self.root / FEATURE_CONFIG

    # ------------------------------------------------------------ stage markers

    def marker(self, stage: str, subset: str) -> Path:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
        return self.root / ".state" / f"{stage}-{subset}.done"

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
        return _official_first(p.name[len(prefix) : -len(suffix)] for p in self.root.glob(f".state/{prefix}*{suffix}"))

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
    if not sep or not _SHA256.fullmatch(digest) or not _inside(name):
        return None
    return name, digest


def _inside(relative: str) -> bool:
    """Whether a relative POSIX path names something inside the dataset directory."""
    return bool(relative) and not relative.startswith("/") and "\\" not in relative and ".." not in relative.split("/")


# ---------------------------------------------------------------- the manifest row

# name -> accepted JSON types, in the order prepare writes them (bool, a subclass of int, never accepted).
FIELDS = {
    "id": (str,),
    "subset": (str,),
    "duration": (int, float),
    "frames": (int,),
    "transcript": (str,),
    "audio": (str,),
    "features": (str,),
    "offset": (int,),
}
_INT_LIMIT = 2**63  # frames and offsets are stored as int64


def make_row(
    uid: str, subset: str, duration: float, frames: int, transcript: str, audio: str, features: str, offset: int
) -> dict:
    """A manifest row (ARCHITECTURE.md): paths relative to the dataset directory."""
    row = dict(
        id=uid,
        subset=subset,
        duration=duration,
        frames=frames,
        transcript=transcript,
        audio=audio,
        features=features,
        offset=offset,
    )
    check_row(row)
    return row


def row_line(row: dict) -> str:
    """The row as one JSON Lines line, exactly as prepare writes it."""
    return json.dumps(row, ensure_ascii=False) + "\n"


def row_key(row: dict) -> tuple[float, str]:
    """Manifests are sorted by this: ascending duration, ties by id."""
    return row["duration"], row["id"]


def parse_row(line: bytes | str) -> dict:
    """One manifest line -> its row, validated; RowError saying what is wrong.

    The one parser of manifest rows: verify collects its errors, the loader raises them."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise RowError(f"not UTF-8 (byte {line[err.start]:#04x} at column {err.start + 1})") from None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise RowError(f"not JSON ({err.msg} at column {err.colno})") from None
    return check_row(row)


def check_row(row) -> dict:
    """The row if it has every field with its type and a sensible value; else RowError."""
    if not isinstance(row, dict):
        raise RowError(f"a JSON {type(row).__name__}, not an object")
    missing = [key for key in FIELDS if key not in row]
    if missing:
        raise RowError(f"missing field {', '.join(repr(key) for key in missing)}")
    for key, kinds in FIELDS.items():
        value = row[key]
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise RowError(
                f"field {key!r} is {type(value).__name__} {str(value)[:40]!r}, "
                f"not {' or '.join(t.__name__ for t in kinds)}"
            )
        if isinstance(value, str) and not _is_unicode(value):
            raise RowError(f"field {key!r} is {value[:40]!r}: not valid Unicode")
    if not row["id"]:
        raise RowError("field 'id' is empty")
    if not (math.isfinite(row["duration"]) and row["duration"] >= 0):
        raise RowError(f"field 'duration' is {row['duration']!r}: not a finite number >= 0")
    if not 1 <= row["frames"] < _INT_LIMIT:
        raise RowError(f"field 'frames' is {row['frames']!r}: not at least 1")
    if not 0 <= row["offset"] < _INT_LIMIT:
        raise RowError(f"field 'offset' is {row['offset']!r}: negative")
    for key in ("audio", "features"):
        if not _inside(row[key]):
            raise RowError(f"field {key!r} is {row[key]!r}: not a relative path inside the dataset directory")
    return row


def _is_unicode(text: str) -> bool:
    """False for a string with lone surrogates (JSON allows "\\ud800"), which no file holds as UTF-8."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


# ---------------------------------------------------------------- splits


def split_sources(dataset: DatasetDir, split: str) -> list[str]:
    """The split's subsets that are marked prepared: the split manifest is their merge."""
    return [s for s in SPLITS[split] if dataset.is_marked("prepare", s)]


def merged_lines(paths: list[Path]) -> Iterator[str]:
    """The lines of sorted manifests merged into one ascending (duration, id) order: a split manifest.

    ManifestError (naming file and line) on a malformed row or a missing file."""
    streams = [_keyed_lines(path) for path in paths]
    for _, line in heapq.merge(*streams, key=lambda item: item[0]):
        yield line


def _keyed_lines(path: Path) -> Iterator[tuple[tuple[float, str], str]]:
    try:
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                try:
                    row = parse_row(line)
                except RowError as err:
                    raise ManifestError(f"{path}:{number}: {err}") from None
                yield row_key(row), line.decode("utf-8").rstrip("\n") + "\n"
    except FileNotFoundError:
        raise ManifestError(f"{path}: missing although its subset is marked prepared") from None


# ---------------------------------------------------------------- the manifest, as columns


class FlatStrings:
    """Strings held as one uint8 array of their UTF-8 bytes and offsets (n + 1,), no Python object per
    string: reading one never writes to the pages that hold them (no reference count), so forked
    DataLoader workers share them with the parent for good."""

    def __init__(self, chars: np.ndarray, offsets: np.ndarray):
        self.chars, self.offsets = chars, offsets

    @classmethod
    def from_bytes(cls, items: list[bytes]) -> "FlatStrings":
        lengths = np.fromiter(map(len, items), np.int64, len(items))
        offsets = np.zeros(len(items) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(np.frombuffer(b"".join(items), np.uint8).copy(), offsets)

    @classmethod
    def concat(cls, parts: list["FlatStrings"]) -> "FlatStrings":
        if not parts:
            return cls.from_bytes([])
        starts = np.cumsum([0] + [len(p.chars) for p in parts[:-1]])
        offsets = np.concatenate([parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, starts)])
        return cls(np.concatenate([p.chars for p in parts]), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def codes(self, i: int) -> np.ndarray:
        """The i-th string's bytes, a view (L,) uint8."""
        return self.chars[self.offsets[i] : self.offsets[i + 1]]

    def __getitem__(self, i: int) -> str:
        return self.codes(i).tobytes().decode("utf-8")

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def select(self, indices: np.ndarray) -> "FlatStrings":
        lengths = self.lengths()[indices]
        offsets = np.zeros(len(indices) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        if len(indices) < 2 or np.all(np.diff(indices) > 0):  # increasing (a filter): a byte mask will do
            chosen = np.zeros(len(self), bool)
            chosen[indices] = True
            return FlatStrings(self.chars[np.repeat(chosen, self.lengths())], offsets)
        # byte k of the result is byte (k - its string's new start) after its string's old start
        gather = np.arange(offsets[-1], dtype=np.int64) + np.repeat(self.offsets[:-1][indices] - offsets[:-1], lengths)
        return FlatStrings(self.chars[gather], offsets)


def _field_pattern(kinds: tuple) -> bytes:
    if kinds == (str,):  # printable ASCII without '"' and '\': the bytes are the string itself
        return rb'"([\x20\x21\x23-\x5b\x5d-\x7e]*)"'
    if kinds == (int,):  # at most 18 digits: always an int64
        return rb"(0|[1-9][0-9]{0,17})"
    return rb"(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"  # a JSON number


# A manifest line exactly as row_line writes an ASCII row. Manifest.read parses such lines in bulk,
# and any other line (other key order, escapes, non-ASCII, a malformed one) with parse_row.
_CANONICAL = re.compile(
    rb"^\{" + b", ".join(f'"{key}": '.encode() + _field_pattern(kinds) for key, kinds in FIELDS.items()) + rb"\}$",
    re.MULTILINE,
)
_READ_CHUNK = 8 << 20


class Manifest:
    """A manifest's rows as columns: numpy arrays and flat strings, no Python object per row.

    duration (n,) float64 s, frames (n,) int64, offset (n,) int64 (the utterance's first frame in its
    shard), shard (n,) int32 (index into `shards`: relative paths), subset (n,) int16 (index into
    `subsets`); id(i), transcript(i), row(i). LibriSpeech's 281,241 training rows take about 80 MB.
    """

    def __init__(self, columns: dict):
        self.duration: np.ndarray = columns["duration"]
        self.frames: np.ndarray = columns["frames"]
        self.offset: np.ndarray = columns["offset"]
        self.shard: np.ndarray = columns["shard"]
        self.shards: list[str] = columns["shards"]
        self.subset: np.ndarray = columns["subset"]
        self.subsets: list[str] = columns["subsets"]
        self.ids: FlatStrings = columns["id"]
        self.transcripts: FlatStrings = columns["transcript"]
        self.audio: FlatStrings = columns["audio"]

    @classmethod
    def read(cls, path) -> "Manifest":
        """Every row of a JSON Lines manifest, validated as parse_row does; ManifestError naming the
        file and line of the first bad one."""
        builder = _Builder(Path(path))
        try:
            with open(path, "rb") as f:
                for chunk in _line_chunks(f):
                    builder.add_chunk(chunk)
        except FileNotFoundError:
            raise DatasetError(f"{path}: no such manifest; prepare the data first with ./download_dataset.sh") from None
        return builder.build()

    @classmethod
    def from_rows(cls, rows: list[dict], where: str = "rows") -> "Manifest":
        """A Manifest of row dicts, each validated; ManifestError naming `where`[index] of a bad one."""
        builder = _Builder(where)
        builder.add_rows(rows)
        return builder.build()

    def __len__(self) -> int:
        return len(self.duration)

    def id(self, i: int) -> str:
        return self.ids[i]

    def transcript(self, i: int) -> str:
        return self.transcripts[i]

    def row(self, i: int) -> dict:
        """Row i as a dict of its FIELDS (duration as a float)."""
        return make_row(
            self.ids[i],
            self.subsets[self.subset[i]],
            float(self.duration[i]),
            int(self.frames[i]),
            self.transcripts[i],
            self.audio[i],
            self.shards[self.shard[i]],
            int(self.offset[i]),
        )

    def select(self, indices) -> "Manifest":
        """The rows at `indices`, in that order (e.g. np.flatnonzero(manifest.duration <= 16.7))."""
        indices = np.asarray(indices, dtype=np.int64)
        columns = {key: getattr(self, key)[indices] for key in ("duration", "frames", "offset", "shard", "subset")}
        columns |= {"id": self.ids.select(indices), "transcript": self.transcripts.select(indices)}
        return Manifest(columns | {"audio": self.audio.select(indices), "shards": self.shards, "subsets": self.subsets})


def _line_chunks(f) -> Iterator[bytes]:
    """The file in chunks of whole lines (about _READ_CHUNK bytes each), each ending in a newline."""
    rest = b""
    while block := f.read(_READ_CHUNK):
        block = rest + block
        end = block.rfind(b"\n") + 1
        if end:
            yield block[:end]
        rest = block[end:]
    if rest:
        yield rest + b"\n"


class _Builder:
    """Collects a manifest's columns chunk by chunk; the canonical lines of a chunk in bulk."""

    def __init__(self, where):
        self.where = where  # the file (lines are numbered) or a name (rows are indexed)
        self.lines = 0  # rows added so far
        self.parts: list[dict] = []
        self.shards: dict[bytes, int] = {}
        self.subsets: dict[bytes, int] = {}

    def _error(self, index: int, err: RowError) -> ManifestError:
        where = f"{self.where}:{index + 1}" if isinstance(self.where, Path) else f"{self.where}[{index}]"
        return ManifestError(f"{where}: {err}")

    def add_chunk(self, chunk: bytes) -> None:
        lines = chunk.count(b"\n")
        matches = _CANONICAL.findall(chunk)
        if len(matches) != lines:  # some line is not canonical (each line matches at most once)
            rows = []
            for index, line in enumerate(chunk.split(b"\n")[:-1], self.lines):
                try:
                    rows.append(parse_row(line))
                except RowError as err:
                    raise self._error(index, err) from None
            self._add(_columns_of(rows))
            return
        columns = dict(zip(FIELDS, zip(*matches))) if matches else {key: () for key in FIELDS}
        with np.errstate(over="ignore"):  # a duration of 1e999 becomes inf, refused below
            for key, dtype in _NUMBERS.items():  # JSON number text -> value, as json.loads reads it
                columns[key] = np.array(columns[key] or [0]).astype(dtype)[: len(matches)]
        self._recheck(columns, chunk)
        self._add(columns)

    def add_rows(self, rows: list[dict]) -> None:
        for index, row in enumerate(rows, self.lines):
            try:
                check_row(row)
            except RowError as err:
                raise self._error(index, err) from None
        self._add(_columns_of(rows))

    def _recheck(self, columns: dict, chunk: bytes) -> None:
        """The checks the canonical pattern does not make, on whole columns; rows failing one are
        parsed by parse_row, whose verdict counts (these checks may be stricter than it)."""
        n, duration = len(columns["id"]), columns["duration"]
        suspect = ~np.isfinite(duration) | (duration < 0) | (columns["frames"] < 1)
        if not all(columns["id"]):
            suspect |= np.fromiter((not s for s in columns["id"]), bool, n)
        for key in ("audio", "features"):  # one scan of the joined paths first; may flag names with ".." inside
            joined = b"\n" + b"\n".join(columns[key]) + b"\n"
            if b".." in joined or b"\n/" in joined or b"\n\n" in joined:
                suspect |= np.fromiter((not p or p[:1] == b"/" or b".." in p for p in columns[key]), bool, n)
        if suspect.any():
            lines = chunk.split(b"\n")
            for index in np.flatnonzero(suspect):
                try:
                    parse_row(lines[index])
                except RowError as err:
                    raise self._error(self.lines + int(index), err) from None

    def _add(self, columns: dict) -> None:
        """columns: one sequence per field: numbers as arrays, strings as UTF-8 bytes."""
        n = len(columns["id"])

        def index(values, table: dict, dtype) -> np.ndarray:
            for value in dict.fromkeys(values):  # the few distinct values, in order of appearance
                table.setdefault(value, len(table))
            return np.fromiter(map(table.__getitem__, values), dtype, n)

        self.parts.append(
            {
                "duration": columns["duration"],
                "frames": columns["frames"],
                "offset": columns["offset"],
                "shard": index(columns["features"], self.shards, np.int32),
                "subset": index(columns["subset"], self.subsets, np.int16),
                "id": FlatStrings.from_bytes(list(columns["id"])),
                "transcript": FlatStrings.from_bytes(list(columns["transcript"])),
                "audio": FlatStrings.from_bytes(list(columns["audio"])),
            }
        )
        self.lines += n

    def build(self) -> Manifest:
        if not self.parts:
            self._add(_columns_of([]))
        columns = {
            key: np.concatenate([p[key] for p in self.parts])
            for key in ("duration", "frames", "offset", "shard", "subset")
        }
        columns |= {key: FlatStrings.concat([p[key] for p in self.parts]) for key in ("id", "transcript", "audio")}
        columns["shards"] = [s.decode("utf-8") for s in self.shards]
        columns["subsets"] = [s.decode("utf-8") for s in self.subsets]
        return Manifest(columns)


_NUMBERS = {"duration": np.float64, "frames": np.int64, "offset": np.int64}


def _columns_of(rows: list[dict]) -> dict:
    """One sequence per field of validated rows: numbers as arrays, strings as UTF-8 bytes."""
    columns = {key: [row[key].encode("utf-8") for row in rows] for key, kinds in FIELDS.items() if kinds == (str,)}
    return columns | {key: np.array([row[key] for row in rows], dtype=dtype) for key, dtype in _NUMBERS.items()}
