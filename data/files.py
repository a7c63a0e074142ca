"""All-or-nothing file writes: every file the project writes appears complete or not at all."""

import os
from contextlib import contextmanager
from pathlib import Path


def temp_name(path: Path, suffix: str = "") -> Path:
    """The temporary name beside `path` that a write goes to first (`.name.tmp.<pid><suffix>`)."""
    return path.with_name(f".{path.name}.tmp.{os.getpid()}{suffix}")


@contextmanager
def replacing(path, suffix: str = ""):
    """Yield a temporary path beside `path` to write; on success it is renamed over `path`, on an
    error it is removed. A writer that decides to keep `path` as it is deletes the temporary file.

    suffix keeps an extension that a writer needs on the temporary name (matplotlib picks the image
    format from it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path, suffix)
    try:
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
