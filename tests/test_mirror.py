"""synthetic.mirror: byte ranges, fault injection, request log and the CLI."""

import http.client
import signal
import subprocess
import sys
import time

import pytest
import requests

from synthetic.mirror import Mirror, parse_range

BODY = bytes(range(256)) * 40  # 10,240 bytes, every offset distinguishable mod 256


@pytest.fixture
def mirror(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"outside the served root")  # what an escaping path would reach
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.bin").write_bytes(BODY)
    with Mirror(tmp_path / "sub") as m:
        yield m


@pytest.mark.parametrize(
    "header, expected",
    [
        ("bytes=0-9", (0, 9)),
        ("bytes=10-", (10, 99)),
        ("bytes=-5", (95, 99)),
        ("bytes=90-500", (90, 99)),
        ("bytes=100-", "unsatisfiable"),
        ("bytes=-0", "unsatisfiable"),
        ("bytes=5-2", None),
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
        (None, None),
        ("bytes=-", None),
    ],
)
def test_parse_range(header, expected):
    assert parse_range(header, 100) == expected


def test_whole_file_and_head(mirror):
    r = requests.get(f"{mirror.url}/a.bin")
    assert (r.status_code, r.content, r.headers["Accept-Ranges"]) == (200, BODY, "bytes")
    h = requests.head(f"{mirror.url}/a.bin")
    assert (h.status_code, h.headers["Content-Length"], h.content) == (200, str(len(BODY)), b"")


def test_ranges(mirror):
    r = requests.get(f"{mirror.url}/a.bin", headers={"Range": "bytes=1000-1009"})
    assert (r.status_code, r.headers["Content-Range"], r.content) == (
        206,
        f"bytes 1000-1009/{len(BODY)}",
        BODY[1000:1010],
    )
    r = requests.get(f"{mirror.url}/a.bin", headers={"Range": "bytes=-3"})
    assert (r.status_code, r.content) == (206, BODY[-3:])
    r = requests.get(f"{mirror.url}/a.bin", headers={"Range": f"bytes={len(BODY)}-"})
    assert (r.status_code, r.headers["Content-Range"]) == (416, f"bytes */{len(BODY)}")


def test_missing_and_escaping_paths_are_404(mirror):
    assert requests.get(f"{mirror.url}/nope.bin").status_code == 404
    conn = http.client.HTTPConnection("127.0.0.1", mirror.port, timeout=5)
    conn.request("GET", "/../a.bin")  # raw, so no client normalises the path away
    assert conn.getresponse().status == 404
    conn.close()


def test_faults_and_request_log(mirror):
    mirror.fail("a.bin", times=1, status=503, after=1)
    mirror.cut("/sub-none", after=1)  # a cut for another path must not touch a.bin
    assert requests.get(f"{mirror.url}/a.bin").status_code == 200
    assert requests.get(f"{mirror.url}/a.bin").status_code == 503
    requests.get(f"{mirror.url}/a.bin", headers={"Range": "bytes=5-"})
    assert [(r.method, r.path, r.range, r.status) for r in mirror.requests] == [
        ("GET", "/a.bin", None, 200),
        ("GET", "/a.bin", None, 503),
        ("GET", "/a.bin", "bytes=5-", 206),
    ]


def test_cut_drops_the_connection_mid_body(mirror):
    mirror.cut("/a.bin", after=100)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(f"{mirror.url}/a.bin")
    assert requests.get(f"{mirror.url}/a.bin").content == BODY  # only the first GET is cut


def test_ignore_range_serves_everything(mirror):
    mirror.ignore_range()
    r = requests.get(f"{mirror.url}/a.bin", headers={"Range": "bytes=5-"})
    assert (r.status_code, r.content) == (200, BODY)


def test_missing_root_is_an_error(tmp_path):
    with pytest.raises(NotADirectoryError, match="nowhere"):
        Mirror(tmp_path / "nowhere")


def test_cli_error_is_one_line_naming_the_root(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "synthetic.mirror", "--root", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: cannot serve --root {tmp_path / 'nowhere'} on 127.0.0.1:0: ")


def test_cli_serves_until_sigterm(tmp_path):
    (tmp_path / "a.bin").write_bytes(BODY)
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "synthetic.mirror", "--root", str(tmp_path), "--port-file", str(port_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        port = int(port_file.read_text())
        assert requests.get(f"http://127.0.0.1:{port}/a.bin", timeout=5).content == BODY
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and out.strip() == f"http://127.0.0.1:{port}"
    assert err == ""  # quiet: no per-request lines
    assert not port_file.exists()


def test_cli_help():
    result = subprocess.run(
        [sys.executable, "-m", "synthetic.mirror", "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and "--port-file" in result.stdout
