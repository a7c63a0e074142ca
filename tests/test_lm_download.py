"""download_dataset.sh --lm: LibriSpeech's LM files through the audio's downloader (resume, md5,
lock, records), and verify_dataset.sh's check of them, against a loopback Mirror."""

import gzip
import hashlib
import re
import shutil

import pytest

import params
from data import download, librispeech
from data import verify as ver
from data.dataset_dir import DatasetDir
from data.prepare import prepare
from synthetic.mirror import Mirror
from tests.corpus import write_tree

ARPA, VOCAB = "3-gram.pruned.1e-7.arpa.gz", "librispeech-vocab.txt"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A mirror root with stand-ins for the default LM files (an ARPA, a vocabulary) and their md5sum.txt."""
    root = tmp_path_factory.mktemp("lm-served")
    arpa_text = "\n\\data\\\nngram 1=3\n\n\\1-grams:\n-1\t<s>\t0\n-1\t</s>\n-1\tTHE\n\n\\end\\\n"
    (root / ARPA).write_bytes(gzip.compress(arpa_text.encode() + b"#" * 200_000, mtime=0))  # big enough to cut
    (root / VOCAB).write_text("THE\nCAT\n")
    (root / "md5sum.txt").write_text(
        "".join(f"{hashlib.md5((root / n).read_bytes()).hexdigest()}  {n}\n" for n in (ARPA, VOCAB))
    )
    return root


@pytest.fixture
def mirror(served):
    with Mirror(served) as m:
        yield m


def run(mirror, data_dir, *extra, checksums=None):
    argv = ["--data-dir", str(data_dir), "--lm", "--lm-mirror", mirror.url, "--retries", "2", "--retry-delay", "0.01"]
    argv += ["--checksums", str(checksums or mirror.root / "md5sum.txt"), "--timeout", "10", *extra]
    return download.main(argv)


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_lm_alone_fetches_the_default_files_and_records_them(mirror, tmp_path, capsys):
    assert run(mirror, tmp_path) == 0
    out = capsys.readouterr().out
    for name in librispeech.DEFAULT_LM_FILES:
        assert md5(tmp_path / "lm" / name) == md5(mirror.root / name)
        assert (tmp_path / ".state" / f"lm-{name}.done").read_text() == f"{md5(mirror.root / name)}  {name}\n"
        assert f"{tmp_path / 'lm' / name}: md5 {md5(mirror.root / name)} verified" in out
    assert not (tmp_path / "archives").exists() and not list(tmp_path.glob("lm/*.part"))
    assert {r.path for r in mirror.requests if r.method == "GET"} == {f"/{n}" for n in librispeech.DEFAULT_LM_FILES}
    mirror.clear_requests()
    assert run(mirror, tmp_path) == 0
    assert not [r for r in mirror.requests if r.method == "GET"]  # a re-run does no work


def test_a_cut_transfer_is_resumed_by_a_rerun(mirror, tmp_path, capsys):
    size = (mirror.root / ARPA).stat().st_size
    mirror.cut(f"/{ARPA}", after=size // 2)
    mirror.fail(f"/{ARPA}", times=3, after=1)  # the cut try, then 503s until this run gives up
    assert run(mirror, tmp_path, "--lm-files", ARPA, "--no-space-check") == 1
    assert f"{mirror.url}/{ARPA}" in capsys.readouterr().err
    assert (tmp_path / "lm" / f"{ARPA}.part").stat().st_size == size // 2
    assert not (tmp_path / "lm" / ARPA).exists() and not (tmp_path / ".state" / f"lm-{ARPA}.done").exists()
    assert run(mirror, tmp_path, "--lm-files", ARPA) == 0
    last = [r for r in mirror.requests if r.method == "GET"][-1]
    assert (last.range, last.status) == (f"bytes={size // 2}-", 206)
    assert md5(tmp_path / "lm" / ARPA) == md5(mirror.root / ARPA)


def test_a_bad_md5_is_refused_and_the_file_deleted(mirror, tmp_path, capsys):
    wrong = tmp_path / "wrong.txt"
    wrong.write_text(f"{'0' * 32}  {VOCAB}\n")
    assert run(mirror, tmp_path / "d", "--lm-files", VOCAB, checksums=wrong) == 1
    err = capsys.readouterr().err
    assert f"{VOCAB}: md5 mismatch: expected {'0' * 32}, got {md5(mirror.root / VOCAB)}" in err
    assert not list((tmp_path / "d" / "lm").iterdir()) and not (tmp_path / "d" / ".state").exists()


def test_a_changed_md5_table_fetches_the_file_again(mirror, tmp_path, capsys):
    assert run(mirror, tmp_path, "--lm-files", VOCAB) == 0
    (tmp_path / ".state" / f"lm-{VOCAB}.done").write_text(f"{'1' * 32}  {VOCAB}\n")  # recorded for other content
    mirror.clear_requests()
    assert run(mirror, tmp_path, "--lm-files", VOCAB) == 0
    assert [r.path for r in mirror.requests if r.method == "GET"] == [f"/{VOCAB}"]
    assert md5(tmp_path / "lm" / VOCAB) == md5(mirror.root / VOCAB)


def test_lm_file_names_and_md5s_are_checked_before_any_download(mirror, tmp_path, capsys):
    assert run(mirror, tmp_path, "--lm-files", "5-gram.arpa") == 2
    assert "--lm-files: unknown file(s) 5-gram.arpa" in capsys.readouterr().err
    assert run(mirror, tmp_path, "--lm-files", "g2p-model-5") == 1  # md5sum.txt does not list it
    assert "lists no md5 for g2p-model-5" in capsys.readouterr().err
    assert not mirror.requests


def test_the_built_in_table():
    assert set(librispeech.DEFAULT_LM_FILES) <= set(librispeech.LM_FILES)
    for name, md5_hex in librispeech.official_lm_md5s().items():
        assert re.fullmatch(r"[0-9a-f]{32}", md5_hex), name
    assert {f.name for f in librispeech.LM_FILES.values() if f.md5 is None} == {
        "g2p-model-5",
        "librispeech-lm-corpus.tgz",
    }
    # No md5 of an LM file is also an archive's: the two tables can share one md5sum.txt.
    assert not set(librispeech.official_lm_md5s()) & set(librispeech.official_md5s())


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = write_tree(tmp_path_factory.mktemp("lm-verify") / "ds", {"dev-clean": (1, 2)})
    prepare(root, None, params.make({"window_size": 0.01}), jobs=1)
    return root


def test_verify_checks_the_lm_files_against_their_records(mirror, prepared, tmp_path, capsys):
    ds = shutil.copytree(prepared, tmp_path / "ds")
    assert run(mirror, ds) == 0
    capsys.readouterr()
    assert ver.main(["--data-dir", str(ds), "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert f"note: lm/{ARPA}: recorded md5 {md5(mirror.root / ARPA)} is not the official" in out
    assert out.rstrip().endswith("Dataset Checksum Passed.")

    (ds / "lm" / VOCAB).write_text("THE\nDOG\n")
    (ds / "lm" / "mine.arpa").write_text("\\data\\\n")
    (ds / "lm" / f"{ARPA}.part").write_bytes(b"x")
    report = ver.verify(ds, jobs=1)
    assert f"changed: lm/{VOCAB} (md5 {md5(ds / 'lm' / VOCAB)}, recorded {md5(mirror.root / VOCAB)})" in report.problems
    assert any(p.startswith("extra: lm/mine.arpa (no download record") for p in report.problems)
    assert any(n.startswith(f"lm/{ARPA}.part: an unfinished download") for n in report.notes)
    (ds / "lm" / ARPA).unlink()
    assert f"missing: lm/{ARPA} (downloaded: .state/lm-{ARPA}.done records it)" in ver.verify(ds, jobs=2).problems
    assert DatasetDir(ds).recorded_lm_files() == sorted(librispeech.DEFAULT_LM_FILES)
