"""data.download against a loopback Mirror serving tiny LibriSpeech-format archives."""

import hashlib
import importlib.util
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from data import download
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
    """download.main with a fast retry policy and --skip-prepare; returns its exit code."""
    argv = [
        "--data-dir",
        str(data_dir),
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


def test_stop_request_leaves_a_resumable_part(mirror, tmp_path, monkeypatch):
    """What Ctrl-C does to a worker thread: it stops at the next chunk, keeping the .part."""
    cfg = download.Config(tmp_path, mirror.url, download.load_checksums(Path(mirror.root) / "md5sum.txt"))
    monkeypatch.setattr(download, "CHUNK", 4096)
    chunks = []
    real = download._check_stop
    monkeypatch.setattr(
        download, "_check_stop", lambda: (chunks.append(1), len(chunks) > 2 and download._STOP.set(), real())
    )
    try:
        with pytest.raises(download.Interrupted):
            download.fetch_archive(cfg, SUBSET)
    finally:
        download._STOP.clear()
        monkeypatch.undo()
    assert (tmp_path / "archives" / f"{SUBSET}.tar.gz.part").stat().st_size == 2 * 4096
    assert run(mirror, tmp_path) == 0
    assert gets(mirror)[-1].range == f"bytes={2 * 4096}-"


def test_python_without_tar_filters_is_a_clear_error(mirror, tmp_path, monkeypatch, capsys):
    monkeypatch.delattr(tarfile, "data_filter")
    assert run(mirror, tmp_path) == 1
    err = capsys.readouterr().err
    assert "tarfile.data_filter" in err and "Python >= 3.11.4" in err and "Traceback" not in err
    assert mirror.requests == [] and not (tmp_path / "archives").exists()


def test_requires_python_is_the_first_release_with_tar_filters():
    text = (REPO / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11.4"' in text


def test_bad_subset_name_is_refused(mirror, tmp_path, capsys):
    assert run(mirror, tmp_path, subsets="dev-clean,dev-cleen") == 1
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
    assert run(mirror, tmp_path, "window_sise=0.01") == 1
    assert "window_sise" in capsys.readouterr().err


def test_wrapper_help_exits_zero():
    result = subprocess.run([str(REPO / "download_dataset.sh"), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--remove-archives" in result.stdout and "--checksums" in result.stdout


def test_wrapper_passes_shellcheck():
    shellcheck = Path(sys.executable).parent / "shellcheck"
    if not shellcheck.exists():
        pytest.skip("shellcheck not installed in the venv")
    result = subprocess.run([str(shellcheck), str(REPO / "download_dataset.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


E2E_MODULES = ("synthetic.corpus", "data.prepare", "data.verify")


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in E2E_MODULES),
    reason="needs synthetic.corpus, data.prepare and data.verify",
)
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
