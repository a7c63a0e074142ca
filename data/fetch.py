"""Fetching one file over HTTP into a .part file: resumed with a Range request after an interruption,
retried with exponential back-off, its md5 computed while it streams.

    fetch(url, part, policy, label) -> the md5 (hex) of every byte of `part` once the file is whole
    remote_size(url, policy) -> its Content-Length, or None where the server does not say

What the bytes should be (the md5 table), where they go next and the stage markers are data.download's.
"""

import hashlib
import io
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import requests
import urllib3

from data.files import file_digest, naming
from data.progress import progress_bar
from exit_status import Failure

CHUNK = 1 << 20  # bytes read from the connection (and written, hashed) at a time
_CONTENT_RANGE = re.compile(r"bytes (?P<first>\d+)-(?P<last>\d+)/(?P<size>\d+|\*)")
T = TypeVar("T")


class FetchError(Failure):
    """A download that failed for good (a 4xx answer, retries used up); the message names the URL."""


class _Retryable(Exception):
    """A failure worth another try (5xx answer, truncated body)."""


@dataclass(frozen=True)
class RetryPolicy:
    tries: int = 5  # tries per request before giving up
    delay: float = 2.0  # s before the 2nd try; doubles after each failure
    timeout: float = 60.0  # s; connect and read timeout


def with_retries(policy: RetryPolicy, url: str, attempt: Callable[[], T]) -> T:
    """attempt() until it returns; retryable failures back off exponentially.

    A try that made progress (its exception carries progressed=True) does not count against the
    limit, so a long transfer over a flaky link still finishes.
    """
    failures = 0
    while True:
        try:
            return attempt()
        except (
            _Retryable,
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            urllib3.exceptions.HTTPError,
        ) as err:
            progressed = getattr(err, "progressed", False)
            failures = 0 if progressed else failures + 1
            if failures >= policy.tries:
                raise FetchError(f"{url}: giving up after {policy.tries} tries: {describe(err)}") from None
            time.sleep(policy.delay * 2 ** max(0, failures - 1))
        except requests.RequestException as err:  # a bad URL or scheme: retrying cannot help
            raise FetchError(f"{url}: {describe(err)}") from None


def describe(err: Exception) -> str:
    """'<exception type>: <its message>' (the type alone if it says nothing)."""
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def _check_status(url: str, response: requests.Response) -> None:
    if response.status_code >= 500:
        raise _Retryable(f"server answered {response.status_code} {response.reason}")
    if response.status_code >= 400 and response.status_code != 416:
        raise FetchError(f"{url}: server answered {response.status_code} {response.reason}")


def remote_size(url: str, policy: RetryPolicy) -> int | None:
    """Content-Length of the file from a HEAD request, None if the server does not say (also if it
    answers 4xx: some servers refuse HEAD; the GET will tell whether the file is there)."""

    def attempt():
        with requests.head(
            url, timeout=policy.timeout, allow_redirects=True, headers={"Accept-Encoding": "identity"}
        ) as r:
            if 400 <= r.status_code < 500:
                print(
                    f"warning: {url}: server answered {r.status_code} {r.reason} to HEAD; size unknown", file=sys.stderr
                )
                return None
            _check_status(url, r)
            length = r.headers.get("Content-Length")
            return int(length) if length and length.isdigit() else None

    return with_retries(policy, url, attempt)


class Transfer:
    """One file's .part and the md5 of the bytes in it, kept in step across tries.

    The .part has a fixed name, unlike every other temporary file: a run killed mid-download must
    find it to resume with a Range request. Two runs writing it at once would interleave their
    bytes; the dataset directory's lock, held by every run that downloads, is what prevents that.
    Even so each write goes to the offset this run's md5 covers (never appended after bytes someone
    else added), and extraction checks the md5 of the archive on disk again.

    stop: set (on Ctrl-C) by the thread that started this one; the transfer then stops at its next
    chunk, raising KeyboardInterrupt, with the .part kept for a resume.
    """

    def __init__(
        self,
        url: str,
        part: Path,
        policy: RetryPolicy,
        label: str,
        position: int = 0,
        stop: threading.Event | None = None,
    ):
        self.url, self.part, self.policy, self.label, self.position, self.stop = (
            url,
            part,
            policy,
            label,
            position,
            stop,
        )
        self.done = 0  # bytes on disk that self.md5 covers
        self.md5 = hashlib.md5()
        if self.part.exists():  # resuming a previous run: hash what is already there, once
            self.done = self.part.stat().st_size
            self.md5 = file_digest(self.part, "md5", limit=self.done)

    def restart(self) -> None:
        self.done, self.md5 = 0, hashlib.md5()
        self.part.unlink(missing_ok=True)

    def attempt(self) -> str:
        """Fetch the rest of the file; returns the md5 of the whole .part."""
        headers = {"Accept-Encoding": "identity"}
        if self.done:
            headers["Range"] = f"bytes={self.done}-"
        with requests.get(self.url, headers=headers, stream=True, timeout=self.policy.timeout) as r:
            _check_status(self.url, r)
            if r.status_code == 416 and self._complete_per_416(r):
                return self.md5.hexdigest()
            if r.status_code == 416:
                self.restart()
                raise _Retryable("server refused the byte range of the partial file; starting over")
            self._stream(r, self._expected_total(r))
        return self.md5.hexdigest()

    def _expected_total(self, r: requests.Response) -> int | None:
        """Size of the whole file per this answer, once it is known to continue the .part.

        A 206 must start at the byte the .part ends with; its total is Content-Range's /size. Any
        other answer (a 200: the server ignored the range) is the whole file: start from byte 0.
        """
        if r.status_code == 206:
            content_range = r.headers.get("Content-Range", "")
            match = _CONTENT_RANGE.fullmatch(content_range.strip())
            if match and int(match["first"]) == self.done:
                return int(match["size"]) if match["size"] != "*" else None
            self.restart()
            raise _Retryable(
                f"server answered bytes {content_range or '(no Content-Range)'!r}, "
                f"not from byte {self.done}; starting over from byte 0"
            )
        if self.done:
            self.restart()  # the server ignored our range and sends the whole file
        length = r.headers.get("Content-Length")
        return int(length) if length and length.isdigit() else None

    def _complete_per_416(self, r: requests.Response) -> bool:
        """Whether a 416 says the partial file already holds every byte (a run killed at the end)."""
        content_range = r.headers.get("Content-Range", "")
        return bool(self.done) and content_range == f"bytes */{self.done}"

    def _stream(self, r: requests.Response, total: int | None) -> None:
        start = self.done
        bar = progress_bar(
            total=total,
            initial=self.done,
            desc=self.label,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            position=self.position,
            leave=True,
        )
        try:
            with naming(self.part), self._open_part() as f:
                # raw stream, undecoded: a server labelling .tar.gz "Content-Encoding: gzip" must
                # not get the archive gunzipped under our md5.
                for chunk in r.raw.stream(CHUNK, decode_content=False):
                    if self.stop is not None and self.stop.is_set():
                        raise KeyboardInterrupt  # the user's Ctrl-C, seen by this thread
                    f.write(chunk)
                    self.md5.update(chunk)
                    self.done += len(chunk)
                    bar.update(len(chunk))
            if total is not None and self.done != total:
                raise _Retryable(f"body ended after {self.done} of {total} bytes")
        except Exception as err:
            err.progressed = self.done > start
            raise
        finally:
            bar.close()

    @contextmanager
    def _open_part(self) -> Iterator[io.BufferedWriter]:
        """The .part, open for writing at byte self.done, with anything after it cut off."""
        with open(os.open(self.part, os.O_WRONLY | os.O_CREAT, 0o666), "wb") as f:
            if os.fstat(f.fileno()).st_size != self.done:
                f.truncate(self.done)
            f.seek(self.done)
            yield f


def fetch(
    url: str, part: Path, policy: RetryPolicy, label: str, position: int = 0, stop: threading.Event | None = None
) -> str:
    """Download (or resume) `url` into `part`; returns the md5 of its bytes. label and position: its
    progress bar's."""
    part.parent.mkdir(parents=True, exist_ok=True)
    transfer = Transfer(url, part, policy, label, position, stop)
    return with_retries(policy, url, transfer.attempt)
