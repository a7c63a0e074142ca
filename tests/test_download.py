"""data.download against a loopback Mirror serving tiny LibriSpeech-format archives."""

import errno
import hashlib
import os
import random
import re
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
import requests

from data import download, extract, fetch
from data.dataset_dir import DatasetDir
from synthetic import mirror as mirror_module
from synthetic.mirror import Mirror
from tests import pipeline_fixtures as fx

REPO = Path(__file__).resolve().parent.parent
SUBSET, OTHER = "dev-clean", "test-clean"
ARCHIVE = f"/{SUBSET}.tar.gz"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Source trees and archives of two subsets plus md5sum.txt, built once for the module."""
    root = tmp_path_factory.mktemp("served")
    for seed, subset in enumerate((SUBSET, OTHER)):
        fx.write_subset(root / "src", subset, seed=seed)
        fx.make_archive(root / "src", subset, root / "www")
    fx.write_md5sums(root / "www")
    return root


@pytest.fixture
def mirror(served):
    with Mirror(served / "www") as m:
        yield m


def run(mirror, data_dir, *extra, subsets=SUBSET, checksums=None, retries=3):
    """download.main with a fast retry policy and --skip-prepare; returns its exit code.
    data_dir None: no --data-dir (the default)."""
    argv = [
        *(["--data-dir", str(data_dir)] if data_dir is not None else []),
        "--subsets",
        subsets,
        "--mirror",
        mirror.url,
        "--checksums",
        str(checksums or Path(mirror.root) / "md5sum.txt"),
        "--retries",
        str(retries),
        "--retry-delay",
        "0.01",
        "--timeout",
        "10",
        "--skip-prepare",
        *extra,
    ]
    return download.main(argv)


def tree_digest(path: Path) -> dict[str, str]:
    return {
        str(f.relative_to(path)): hashlib.md5(f.read_bytes()).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file()
    }


def gets(mirror):
    return [r for r in mirror.requests if r.method == "GET"]


def archive_md5(mirror, subset=SUBSET) -> str:
    return fx.md5_of(Path(mirror.root) / f"{subset}.tar.gz")


def test_download_and_extract_two_subsets(mirror, served, tmp_path):
    assert run(mirror, tmp_path, "--jobs", "2", subsets=f"{SUBSET},{OTHER}") == 0
    for subset in (SUBSET, OTHER):
        assert tree_digest(tmp_path / "LibriSpeech" / subset) == tree_digest(served / "src" / "LibriSpeech" / subset)
        assert (
            tmp_path / ".state" / f"download-{subset}.done"
        ).read_text() == f"{archive_md5(mirror, subset)}  {subset}.tar.gz\n"
        assert (tmp_path / ".state" / f"extract-{subset}.done").is_file()
        assert fx.md5_of(tmp_path / "archives" / f"{subset}.tar.gz") == archive_md5(mirror, subset)
    assert (tmp_path / "LibriSpeech" / "README.TXT").is_file()
    assert not list(tmp_path.glob("archives/*.part")) and not list(tmp_path.glob(".extract-*"))


def test_cut_transfer_is_resumed_by_a_rerun(mirror, tmp_path, capsys):
    size = (Path(mirror.root) / f"{SUBSET}.tar.gz").stat().st_size
    mirror.cut(ARCHIVE, after=size // 2)
    mirror.fail(ARCHIVE, times=2, after=1)  # the cut try, then 503s until this run gives up
    assert run(mirror, tmp_path, "--no-space-check", retries=2) == 1
    assert f"{mirror.url}{ARCHIVE}" in capsys.readouterr().err
    assert (tmp_path / "archives" / f"{SUBSET}.tar.gz.part").stat().st_size == size // 2
    assert not (tmp_path / ".state" / f"download-{SUBSET}.done").exists()

    assert run(mirror, tmp_path) == 0
    last = mirror.requests[-1]
    assert (last.range, last.status) == (f"bytes={size // 2}-", 206)
    assert fx.md5_of(tmp_path / "archives" / f"{SUBSET}.tar.gz") == archive_md5(mirror)


def test_cut_transfer_is_resumed_within_one_run(mirror, tmp_path):
    mirror.cut(ARCHIVE, after=1000, times=2)
    assert run(mirror, tmp_path, retries=1) == 0  # progress made: the cut does not use up a try
    assert [r.range for r in gets(mirror)] == [None, "bytes=1000-", "bytes=2000-"]
    assert fx.md5_of(tmp_path / "archives" / f"{SUBSET}.tar.gz") == archive_md5(mirror)


def test_server_ignoring_range_means_starting_over(mirror, tmp_path):
    whole = (Path(mirror.root) / f"{SUBSET}.tar.gz").read_bytes()
    (tmp_path / "archives").mkdir()
    (tmp_path / "archives" / f"{SUBSET}.tar.gz.part").write_bytes(whole[:1500])
    mirror.ignore_range()
    assert run(mirror, tmp_path) == 0
    assert [(r.range, r.status) for r in gets(mirror)] == [("bytes=1500-", 200)]
    assert fx.md5_of(tmp_path / "archives" / f"{SUBSET}.tar.gz") == archive_md5(mirror)


def _first_range_answer(monkeypatch, edit):
    """Make the mirror answer its first satisfiable Range request with edit((first, last))."""
    real, calls = mirror_module.parse_range, []

    def fake(header, size):
        asked = real(header, size)
        if isinstance(asked, tuple) and not calls:
            calls.append(asked)
            return edit(asked)
        return asked

    monkeypatch.setattr(mirror_module, "parse_range", fake)


def test_206_from_another_byte_means_starting_over(mirror, tmp_path, monkeypatch):
    whole = (Path(mirror.root) / f"{SUBSET}.tar.gz").read_bytes()
    (tmp_path / "archives").mkdir()
    (tmp_path / "archives" / f"{SUBSET}.tar.gz.part").write_bytes(whole[:1500])
    _first_range_answer(monkeypatch, lambda asked: (asked[0] - 100, asked[1]))  # "bytes 1400-..."
    assert run(mirror, tmp_path) == 0
    assert [(r.range, r.status) for r in gets(mirror)] == [("bytes=1500-", 206), (None, 200)]
    assert fx.md5_of(tmp_path / "archives" / f"{SUBSET}.tar.gz") == archive_md5(mirror)


def test_total_comes_from_content_range_not_content_length(mirror, tmp_path, monkeypatch):
    """A 206 of a shorter range than asked: the archive is not complete at its end, so resume."""
    whole = (Path(mirror.root) / f"{SUBSET}.tar.gz").read_bytes()
    (tmp_path / "archives").mkdir()
    (tmp_path / "archives" / f"{SUBSET}.tar.gz.part").write_bytes(whole[:1500])
    _first_range_answer(monkeypatch, lambda asked: (asked[0], asked[0] + 499))  # "bytes 1500-1999/<size>"
    assert run(mirror, tmp_path) == 0
    assert [(r.range, r.status) for r in gets(mirror)] == [("bytes=1500-", 206), ("bytes=2000-", 206)]
    assert fx.md5_of(tmp_path / "archives" / f"{SUBSET}.tar.gz") == archive_md5(mirror)


def test_503_answers_are_retried(mirror, tmp_path):
    mirror.fail(ARCHIVE, times=2)
    assert run(mirror, tmp_path, "--no-space-check") == 0
    assert [r.status for r in mirror.requests] == [503, 503, 200]
    assert (tmp_path / ".state" / f"extract-{SUBSET}.done").is_file()


def test_retries_exhausted_is_a_clear_error(mirror, tmp_path, capsys):
    mirror.fail(ARCHIVE, times=10, status=502)
    assert run(mirror, tmp_path, "--no-space-check", retries=3) == 1
    err = capsys.readouterr().err
    assert f"{mirror.url}{ARCHIVE}" in err and "giving up after 3 tries" in err and "502" in err
    assert len(mirror.requests) == 3
    assert not (tmp_path / ".state" / f"download-{SUBSET}.done").exists()


def test_missing_file_is_not_retried(mirror, tmp_path, capsys):
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "md5sum.txt").write_text(f"{'0' * 32}  {SUBSET}.tar.gz\n")
    with Mirror(tmp_path / "www") as empty:
        assert run(empty, tmp_path / "data", "--no-space-check") == 1
        assert len(empty.requests) == 1
    assert "404" in capsys.readouterr().err


def test_md5_mismatch_deletes_and_never_extracts(mirror, served, tmp_path, capsys):
    wrong = "f" * 32
    checksums = tmp_path / "md5sum.txt"
    checksums.write_text(f"{wrong}  {SUBSET}.tar.gz\n")
    assert run(mirror, tmp_path / "data", checksums=checksums) == 1
    err = capsys.readouterr().err
    assert f"{SUBSET}.tar.gz" in err and wrong in err and archive_md5(mirror) in err
    data = tmp_path / "data"
    assert not (data / "LibriSpeech").exists() and not list(data.glob("archives/*"))
    assert not list(data.glob(".state/*"))


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "device"])
def test_hostile_members_are_refused(tmp_path, capsys, kind):
    archive, member = fx.hostile_archive(tmp_path / "www", SUBSET, kind)
    fx.write_md5sums(tmp_path / "www")
    data = tmp_path / "data"
    with Mirror(tmp_path / "www") as m:
        assert run(m, data) == 1
    err = capsys.readouterr().err
    assert f"{SUBSET}.tar.gz" in err and repr(member) in err and "refusing" in err
    assert not (data / "LibriSpeech").exists() and not list(data.glob(".extract-*"))
    assert not (data / ".state" / f"extract-{SUBSET}.done").exists()
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/absolute-escape.txt").exists()


def test_rerun_does_no_work(mirror, tmp_path):
    assert run(mirror, tmp_path) == 0
    sentinel = tmp_path / "LibriSpeech" / SUBSET / "sentinel"
    sentinel.write_text("a re-extraction would remove me")
    marker = tmp_path / ".state" / f"extract-{SUBSET}.done"
    stamp = marker.stat().st_mtime_ns
    mirror.clear_requests()
    assert run(mirror, tmp_path) == 0
    assert mirror.requests == [] and sentinel.exists() and marker.stat().st_mtime_ns == stamp


def test_removed_archive_still_counts_as_done(mirror, tmp_path):
    assert run(mirror, tmp_path, "--remove-archives") == 0
    assert not (tmp_path / "archives" / f"{SUBSET}.tar.gz").exists()
    assert (tmp_path / "LibriSpeech" / SUBSET).is_dir()
    mirror.clear_requests()
    assert run(mirror, tmp_path, "--remove-archives") == 0
    assert mirror.requests == []


def test_archive_left_by_a_killed_run_is_verified_not_refetched(mirror, tmp_path):
    """Killed after the rename, before the marker; and a half-extracted temp dir left behind."""
    (tmp_path / "archives").mkdir()
    (tmp_path / "archives" / f"{SUBSET}.tar.gz").write_bytes((Path(mirror.root) / f"{SUBSET}.tar.gz").read_bytes())
    (tmp_path / f".extract-{SUBSET}.tmp" / "junk").mkdir(parents=True)
    assert run(mirror, tmp_path) == 0
    assert [r.method for r in mirror.requests] == []
    assert (tmp_path / ".state" / f"download-{SUBSET}.done").read_text().startswith(archive_md5(mirror))
    assert not (tmp_path / f".extract-{SUBSET}.tmp").exists()


def _other_corpus(tmp_path: Path) -> Path:
    """The same subset re-synthesised with another seed: www/ with its archive and md5sum.txt."""
    fx.write_subset(tmp_path / "src2", SUBSET, seed=7)
    fx.make_archive(tmp_path / "src2", SUBSET, tmp_path / "www2")
    fx.write_md5sums(tmp_path / "www2")
    return tmp_path / "www2"


def test_new_corpus_replaces_the_old_archive_in_one_run(mirror, tmp_path, capsys):
    data = tmp_path / "data"
    assert run(mirror, data) == 0
    (data / "archives" / f"{SUBSET}.tar.gz.part").write_bytes(b"old")
    www2 = _other_corpus(tmp_path)
    with Mirror(www2) as m2:
        assert run(m2, data) == 0, capsys.readouterr().err
        assert [(r.range, r.status) for r in gets(m2)] == [(None, 200)]
    assert tree_digest(data / "LibriSpeech" / SUBSET) == tree_digest(tmp_path / "src2" / "LibriSpeech" / SUBSET)
    assert fx.md5_of(data / "archives" / f"{SUBSET}.tar.gz") == fx.md5_of(www2 / f"{SUBSET}.tar.gz")
    assert not (data / "archives" / f"{SUBSET}.tar.gz.part").exists()


def test_local_archive_failing_its_md5_is_downloaded_again(mirror, tmp_path, capsys):
    """An archive of another corpus left without a marker: deleted and fetched again, same run."""
    (tmp_path / "archives").mkdir()
    local = tmp_path / "archives" / f"{SUBSET}.tar.gz"
    local.write_bytes((Path(mirror.root) / f"{OTHER}.tar.gz").read_bytes())
    assert run(mirror, tmp_path) == 0
    err = capsys.readouterr().err
    assert f"{local}: local archive has md5 {archive_md5(mirror, OTHER)}" in err and "downloading it again" in err
    assert [(r.range, r.status) for r in gets(mirror)] == [(None, 200)]
    assert fx.md5_of(local) == archive_md5(mirror)
    assert (tmp_path / ".state" / f"extract-{SUBSET}.done").is_file()


def test_archive_deleted_before_extraction_is_fetched_again(mirror, tmp_path):
    assert run(mirror, tmp_path) == 0
    (tmp_path / "archives" / f"{SUBSET}.tar.gz").unlink()
    (tmp_path / ".state" / f"extract-{SUBSET}.done").unlink()
    mirror.clear_requests()
    assert run(mirror, tmp_path) == 0
    assert [r.status for r in gets(mirror)] == [200]
    assert (tmp_path / ".state" / f"extract-{SUBSET}.done").is_file()


def test_changed_checksum_invalidates_markers(mirror, tmp_path, capsys):
    assert run(mirror, tmp_path, "--remove-archives") == 0
    checksums = tmp_path / "other-md5sum.txt"
    checksums.write_text(f"{'e' * 32}  {SUBSET}.tar.gz\n")
    assert run(mirror, tmp_path, checksums=checksums) == 1  # re-fetched, and now a mismatch
    assert "e" * 32 in capsys.readouterr().err
    assert not (tmp_path / ".state" / f"extract-{SUBSET}.done").exists()


def test_disk_space_shortfall_names_the_figures(mirror, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(download, "archive_bytes", lambda cfg, subset: 10_000_000_000)
    monkeypatch.setattr(download, "free_bytes", lambda path: 12_000_000_000)
    assert run(mirror, tmp_path) == 1  # download 10 GB + extract 10 GB
    err = capsys.readouterr().err
    assert "need 20.0 GB, available 12.0 GB, missing 8.0 GB" in err and "--no-space-check" in err
    assert mirror.requests == []
    assert run(mirror, tmp_path, "--no-space-check") == 0


def test_disk_space_of_unofficial_archive_comes_from_head(mirror, tmp_path, monkeypatch, capsys):
    size = (Path(mirror.root) / f"{SUBSET}.tar.gz").stat().st_size
    monkeypatch.setattr(download, "free_bytes", lambda path: 2 * size - 1)
    assert run(mirror, tmp_path) == 1
    assert "missing 1 B" in capsys.readouterr().err
    assert [r.method for r in mirror.requests] == ["HEAD"]


@pytest.mark.parametrize("status", [403, 404, 405])
def test_4xx_answer_to_head_means_size_unknown(mirror, tmp_path, capsys, status):
    mirror.fail(ARCHIVE, times=1, status=status)  # the HEAD only; the GET is served
    assert run(mirror, tmp_path) == 0
    err = capsys.readouterr().err
    assert f"warning: {mirror.url}{ARCHIVE}: server answered {status}" in err
    assert f"warning: size of {mirror.url}{ARCHIVE} unknown" in err
    assert [(r.method, r.status) for r in mirror.requests] == [("HEAD", status), ("GET", 200)]
    assert (tmp_path / ".state" / f"extract-{SUBSET}.done").is_file()


class _StopAfter(threading.Event):
    """A stop request that comes after `chunks` chunks were written (the main thread's Ctrl-C)."""

    def __init__(self, chunks: int):
        super().__init__()
        self.chunks = chunks

    def is_set(self) -> bool:
        self.chunks -= 1
        return self.chunks < 0


def test_stop_request_leaves_a_resumable_part(mirror, tmp_path, monkeypatch):
    """What Ctrl-C does to a worker thread: it stops at the next chunk, keeping the .part."""
    cfg = download.Config(tmp_path, mirror.url, download.load_checksums(Path(mirror.root) / "md5sum.txt"))
    monkeypatch.setattr(fetch, "CHUNK", 4096)
    with pytest.raises(KeyboardInterrupt):
        fetch.fetch(cfg.url(SUBSET), cfg.part(SUBSET), cfg.policy, SUBSET, stop=_StopAfter(2))
    monkeypatch.undo()
    assert (tmp_path / "archives" / f"{SUBSET}.tar.gz.part").stat().st_size == 2 * 4096
    assert run(mirror, tmp_path) == 0
    assert gets(mirror)[-1].range == f"bytes={2 * 4096}-"


def test_python_without_tar_filters_is_a_clear_error(mirror, tmp_path, monkeypatch, capsys):
    monkeypatch.delattr(tarfile, "data_filter")
    assert run(mirror, tmp_path) == 1
    err = capsys.readouterr().err
    assert "tarfile.data_filter" in err and "Python 3.10.12+ or 3.11.4+" in err and "Traceback" not in err
    assert mirror.requests == [] and not (tmp_path / "archives").exists()


def test_bad_subset_name_is_refused(mirror, tmp_path, capsys):
    assert run(mirror, tmp_path, subsets="dev-clean,dev-cleen") == 2  # bad usage
    err = capsys.readouterr().err
    assert "dev-cleen" in err and "train-other-500" in err
    assert mirror.requests == []


def test_archive_missing_from_checksums_is_named(mirror, tmp_path, capsys):
    checksums = tmp_path / "md5sum.txt"
    checksums.write_text(f"{archive_md5(mirror)}  {SUBSET}.tar.gz\n")
    assert run(mirror, tmp_path, subsets=f"{SUBSET},{OTHER}", checksums=checksums) == 1
    err = capsys.readouterr().err
    assert f"{OTHER}.tar.gz" in err and str(checksums) in err


def test_malformed_checksum_line_is_named(mirror, tmp_path, capsys):
    checksums = tmp_path / "md5sum.txt"
    checksums.write_text(f"{archive_md5(mirror)}  {SUBSET}.tar.gz\nnot-an-md5  x.tar.gz\n")
    assert run(mirror, tmp_path, checksums=checksums) == 1
    assert f"{checksums}:2" in capsys.readouterr().err


def test_bad_param_override_is_refused(mirror, tmp_path, capsys):
    assert run(mirror, tmp_path, "window_sise=0.01") == 2  # bad usage
    assert "window_sise" in capsys.readouterr().err
    assert run(mirror, tmp_path, "--jobs", "0") == 2
    assert "--jobs=0: must be at least 1" in capsys.readouterr().err
    assert mirror.requests == []


def test_wrapper_help_exits_zero():
    env = {k: v for k, v in os.environ.items() if k != "DS2_DATA_DIR"}
    result = subprocess.run(
        [str(REPO / "download_dataset.sh"), "--help"], capture_output=True, text=True, timeout=60, cwd="/", env=env
    )
    assert result.returncode == 0, result.stderr
    assert "--remove-archives" in result.stdout and "--checksums" in result.stdout
    help_text = " ".join(result.stdout.split())
    assert "$DS2_DATA_DIR if set, else LibriSpeech_dataset in the repository" in help_text


def test_end_to_end_synthesize_serve_download_verify(tmp_path):
    from synthetic.corpus import synthesize

    www, data = tmp_path / "www", tmp_path / "data"
    synthesize(www, {"train-clean-100": 6, "dev-clean": 3}, seed=1, jobs=2)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with Mirror(www) as m:
        result = subprocess.run(
            [
                str(REPO / "download_dataset.sh"),
                "--mirror",
                m.url,
                "--checksums",
                str(www / "md5sum.txt"),
                "--data-dir",
                str(data),
                "--subsets",
                "train-clean-100,dev-clean",
                "--jobs",
                "2",
                "preset=tiny",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    verify = subprocess.run(
        [sys.executable, "-m", "data.verify", "--data-dir", str(data)], capture_output=True, text=True, timeout=300
    )
    assert verify.returncode == 0, verify.stderr[-3000:]
    assert "Dataset Checksum Passed." in verify.stdout


# ---------------------------------------------------------------- runs that collide (issue 11, item 1)


def test_second_run_on_a_busy_dataset_dir_stops_at_once_naming_the_first(mirror, tmp_path, capsys):
    with DatasetDir(tmp_path).lock("download_dataset.sh --subsets dev-clean"):
        start = time.monotonic()
        assert run(mirror, tmp_path) == 1
        assert time.monotonic() - start < 5
    err = capsys.readouterr().err
    assert f"{tmp_path} is in use by another run: download_dataset.sh --subsets dev-clean (pid {os.getpid()}" in err
    assert mirror.requests == [] and not (tmp_path / "archives").exists()
    assert run(mirror, tmp_path) == 0  # once the first has ended


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def test_two_real_runs_on_one_dataset_dir_against_a_slow_mirror(served, tmp_path):
    """Two download_dataset.sh processes on one --data-dir, the second started while the first
    downloads from a throttled mirror: the second stops at once naming the first, the first
    finishes, and the dataset verifies."""
    data, www = tmp_path / "data", served / "www"
    size = (www / f"{SUBSET}.tar.gz").stat().st_size
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with Mirror(www, throttle=size / 3) as m:  # about 3 s for the archive
        command = [
            *(str(REPO / "download_dataset.sh"), "--data-dir", str(data), "--subsets", SUBSET, "--mirror", m.url),
            *("--checksums", str(www / "md5sum.txt"), "--jobs", "2", "preset=tiny"),
        ]
        first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            part = data / "archives" / f"{SUBSET}.tar.gz.part"
            _wait_for(lambda: part.exists() or first.poll() is not None, 60, "the first run's download")
            start = time.monotonic()
            second = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
            second_took = time.monotonic() - start
            assert part.exists(), "the first run's download ended before the second run started"
            _, first_err = first.communicate(timeout=240)
        finally:
            first.kill()
            first.wait()
    assert second.returncode == 1 and second_took < 20
    assert f"{data} is in use by another run: download_dataset.sh" in second.stderr
    assert f"(pid {first.pid} on " in second.stderr and "Traceback" not in second.stderr
    assert first.returncode == 0, first_err[-3000:]
    verify = subprocess.run(
        [str(REPO / "verify_dataset.sh"), "--data-dir", str(data)], capture_output=True, text=True, timeout=120
    )
    assert verify.returncode == 0 and "Dataset Checksum Passed." in verify.stdout, verify.stdout + verify.stderr


def test_throttled_mirror_sends_at_its_rate(served):
    body = (served / "www" / f"{SUBSET}.tar.gz").read_bytes()
    with Mirror(served / "www", throttle=len(body) / 0.5) as m:
        start = time.monotonic()
        assert requests.get(m.url + ARCHIVE, timeout=10).content == body
        assert time.monotonic() - start >= 0.4
    with pytest.raises(ValueError, match="throttle 0"):
        Mirror(served / "www", throttle=0)


def test_extraction_dir_is_unique_to_the_run(mirror, tmp_path, monkeypatch):
    targets, real = [], extract.extract_checked
    monkeypatch.setattr(
        extract,
        "extract_checked",
        lambda archive, md5, target, stop: real(archive, md5, targets.append(target) or target),
    )
    assert run(mirror, tmp_path) == 0
    assert len(targets) == 1 and re.fullmatch(
        rf"\.extract-{SUBSET}\.tmp\.\S+\.{os.getpid()}\.[0-9a-f]+", targets[0].name
    )
    assert not targets[0].exists()


# ---------------------------------------------------------------- archive integrity (item 2)


def _downloaded_not_extracted(mirror, data: Path, archive: bytes) -> Path:
    """data/ as a run killed after the download marker left it, with `archive` as the archive."""
    (data / "archives").mkdir(parents=True)
    (data / "archives" / f"{SUBSET}.tar.gz").write_bytes(archive)
    (data / ".state").mkdir()
    (data / ".state" / f"download-{SUBSET}.done").write_text(f"{archive_md5(mirror)}  {SUBSET}.tar.gz\n")
    return data / "archives" / f"{SUBSET}.tar.gz"


def test_archive_changed_after_its_download_is_never_extracted(mirror, tmp_path, capsys):
    """Single-bit flips anywhere, the gzip trailer (CRC, size) included: a named error, nothing extracted
    or marked; a re-run downloads the archive again."""
    good = (Path(mirror.root) / f"{SUBSET}.tar.gz").read_bytes()
    rng = random.Random(11)
    positions = [len(good) - 1, len(good) - 6, 20, len(good) // 2, *(rng.randrange(len(good)) for _ in range(8))]
    for i, position in enumerate(positions):
        bad = bytearray(good)
        bad[position] ^= 1 << rng.randrange(8)
        archive = _downloaded_not_extracted(mirror, tmp_path / f"data{i}", bytes(bad))
        assert run(mirror, archive.parents[1]) == 1, f"flipped byte {position} of {len(good)}"
        err = capsys.readouterr().err
        assert f"{archive}: md5 " in err and f"expected {archive_md5(mirror)}" in err and "damaged or changed" in err
        assert not (archive.parents[1] / "LibriSpeech").exists() and not list(archive.parents[1].glob(".extract-*"))
        assert not list((archive.parents[1] / ".state").iterdir())
    assert mirror.requests == []
    assert run(mirror, archive.parents[1]) == 0
    assert [r.status for r in gets(mirror)] == [200]
    assert (archive.parents[1] / ".state" / f"extract-{SUBSET}.done").is_file()


def test_archive_twice_as_long_is_never_extracted(mirror, tmp_path, capsys):
    """What two runs appending to one .part made: the archive, then its bytes again."""
    good = (Path(mirror.root) / f"{SUBSET}.tar.gz").read_bytes()
    archive = _downloaded_not_extracted(mirror, tmp_path, good + good)
    assert run(mirror, tmp_path) == 1
    assert f"{archive}: md5 " in capsys.readouterr().err
    assert not (tmp_path / ".state" / f"extract-{SUBSET}.done").exists()


def test_part_is_written_at_the_offset_its_md5_covers(mirror, tmp_path):
    """Bytes after those a transfer accounts for (another writer's) are cut off, never kept."""
    cfg = download.Config(tmp_path, mirror.url, download.load_checksums(Path(mirror.root) / "md5sum.txt"))
    good = (Path(mirror.root) / f"{SUBSET}.tar.gz").read_bytes()
    (tmp_path / "archives").mkdir()
    part = tmp_path / "archives" / f"{SUBSET}.tar.gz.part"
    part.write_bytes(good[:1500])
    transfer = fetch.Transfer(cfg.url(SUBSET), part, cfg.policy, SUBSET)
    with part.open("ab") as other:
        other.write(b"another writer's bytes")
    assert transfer.attempt() == archive_md5(mirror)
    assert part.read_bytes() == good


# ---------------------------------------------------------------- a full disk (items 4/5)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_full_disk_while_downloading_names_the_file(mirror, tmp_path, capsys):
    part = tmp_path / "archives" / f"{SUBSET}.tar.gz.part"
    part.parent.mkdir()
    part.symlink_to("/dev/full")  # every write fails with ENOSPC, as on a full disk
    assert run(mirror, tmp_path, "--no-space-check") == 1
    err = capsys.readouterr().err
    assert f"error: {SUBSET}: {part}: no space left on the device; free some space and re-run" in err
    assert "Traceback" not in err and not (tmp_path / ".state" / f"download-{SUBSET}.done").exists()


def test_full_disk_while_extracting_names_the_file(mirror, tmp_path, monkeypatch, capsys):
    def full_disk(self, tarinfo, targetpath):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a write to a full disk: no file name

    monkeypatch.setattr(tarfile.TarFile, "makefile", full_disk)
    assert run(mirror, tmp_path) == 1
    err = capsys.readouterr().err
    assert re.search(rf"\.extract-{SUBSET}\.tmp\.\S+/LibriSpeech/\S+: no space left on the device", err)
    assert not (tmp_path / ".state" / f"extract-{SUBSET}.done").exists() and not list(tmp_path.glob(".extract-*"))


# ---------------------------------------------------------------- one default data directory (item 6)


def test_default_data_dir_is_the_one_rule(mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("DS2_DATA_DIR", str(tmp_path / "from-env"))
    monkeypatch.chdir(tmp_path)
    assert run(mirror, None) == 0
    assert (tmp_path / "from-env" / ".state" / f"extract-{SUBSET}.done").is_file()
    assert not (tmp_path / "LibriSpeech_dataset").exists()
