"""Files written all or nothing, file digests, and OSErrors that name their file.

Every file the project writes appears complete or not at all: it is written to a temporary name
beside its final one and renamed into place. The temporary name is unique per run (host, pid and a
random token): a pid alone repeats across the hosts that share a file system.
"""

import hashlib
import os
import re
import secrets
import socket
from contextlib import contextmanager
from pathlib import Path

CHUNK = 1 << 20
# The host name as it may appear in a file name (no '/', no spaces), at most 32 characters.
_HOST = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:32] or "host"


def temp_name(path: Path, suffix: str = "") -> Path:
    """The temporary name beside `path` that a write goes to first: `.name.tmp.<host>.<pid>.<token><suffix>`.

    Every `.<name>.tmp.*` in a directory is a leftover of some run; whoever cleans them up must
    know that no other run writes there (the dataset directory's lock).
    """
    return path.with_name(f".{path.name}.tmp.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


@contextmanager
def naming(path):
    """Give an OSError raised inside without a file name (a failed write: "No space left on device")
    the name `path`, so that the one message it becomes (exit_status.describe_os_error) says where."""
    try:
        yield
    except OSError as err:
        if err.filename is None:
            err.filename = str(path)
        raise


@contextmanager
def replacing(path, suffix: str = ""):
    """Yield a temporary path beside `path` to write; on success it is renamed over `path`, on an
    error it is removed (an OSError without a file name gets `path`'s). A writer that decides to
    keep `path` as it is deletes the temporary file.

    suffix keeps an extension that a writer needs on the temporary name (matplotlib picks the image
    format from it).
    """
    path = Path(path)
    tmp = temp_name(path, suffix)
    try:
        with naming(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            if tmp.exists():
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomically(path, data: str | bytes) -> None:
    """Write text (UTF-8) or bytes to path, all or nothing."""
    with replacing(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")


def save_npy_atomically(path, array) -> None:
    """np.save's bytes of a numpy array, all or nothing. Written with Python's file write rather than
    np.save, whose short write on a full disk raises `OSError: 924623 requested and 552896 written` (no
    errno, no file); this raises ENOSPC naming `path`."""
    import numpy as np  # here, not above: data.verify imports this module before it starts hashing

    array = np.ascontiguousarray(array)
    with replacing(path) as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(array))
        f.write(memoryview(array).cast("B"))


def file_digest(path, algorithm: str = "sha256", limit: int | None = None) -> "hashlib._Hash":
    """The hash object of the file's bytes (only the first `limit` bytes if given). Read in CHUNKs
    (hashlib.file_digest is Python 3.11+)."""
    digest, remaining = hashlib.new(algorithm), limit
    with open(path, "rb") as f:
        while (remaining is None or remaining > 0) and (
            chunk := f.read(CHUNK if remaining is None else min(CHUNK, remaining))
        ):
            digest.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
    return digest


def sha256_file(path) -> str:
    return file_digest(path).hexdigest()


def same_bytes(a: Path, b: Path) -> bool:
    """Whether both files exist with the same bytes (compared in chunks, not cached like filecmp)."""
    try:
        if a.stat().st_size != b.stat().st_size:
            return False
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while chunk := fa.read(CHUNK):
                if chunk != fb.read(len(chunk)):
                    return False
        return True
    except FileNotFoundError:
        return False


def write_if_changed(path, lines) -> bool:
    """Write the lines (str) to a temporary name; replace path only if the bytes differ (else leave
    path and its mtime alone). Returns whether path was (re)written."""
    path = Path(path)
    with replacing(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.writelines(lines)
        if same_bytes(tmp, path):
            tmp.unlink()
            return False
    return True
