"""data.verify / verify_dataset.sh: passes on a prepared tree, fails naming the damage."""

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import params
from data import download, librispeech
from data import verify as ver
from data.dataset_dir import DatasetDir
from data.prepare import prepare
from tests.corpus import unprivileged, write_tree

REPO = Path(__file__).resolve().parents[1]
CHAPTER = "LibriSpeech/dev-clean/100/1000"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = write_tree(tmp_path_factory.mktemp("verify") / "ds", {"dev-clean": (2, 3), "test-other": (1, 2)})
    prepare(root, None, params.make({"window_size": 0.01}), jobs=1)
    return root


@pytest.fixture
def ds(template, tmp_path):
    return Path(shutil.copytree(template, tmp_path / "ds"))


def _run(root: Path, capsys) -> tuple[int, str]:
    code = ver.main(["--data-dir", str(root), "--jobs", "2"])
    return code, capsys.readouterr().out


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_prepared_tree_passes(ds, capsys):
    code, out = _run(ds, capsys)
    assert code == 0 and out.rstrip().endswith("Dataset Checksum Passed.")
    assert "Failed" not in out


def test_flipped_byte_in_flac(ds, capsys):
    _flip_byte(ds / CHAPTER / "100-1000-0001.flac")
    code, out = _run(ds, capsys)
    assert code == 1 and f"changed: {CHAPTER}/100-1000-0001.flac" in out
    assert out.rstrip().endswith("Dataset Checksum Failed.")


def test_flipped_byte_in_feature_shard(ds, capsys):
    _flip_byte(ds / "features/dev-clean/101-1001.npy")
    code, out = _run(ds, capsys)
    assert code == 1 and "changed: features/dev-clean/101-1001.npy" in out


def test_deleted_utterance(ds, capsys):
    trans = ds / CHAPTER / "100-1000.trans.txt"
    trans.write_text(
        "".join(line for line in trans.read_text().splitlines(True) if not line.startswith("100-1000-0002 "))
    )
    (ds / CHAPTER / "100-1000-0002.flac").unlink()
    code, out = _run(ds, capsys)
    assert code == 1
    assert f"missing: {CHAPTER}/100-1000-0002.flac" in out
    assert "extra: utterance 100-1000-0002 in manifests/dev-clean.jsonl has no transcript line" in out


def _set_transcript(ds, line: int, text: str) -> None:
    """Replace the transcript of the chapter's line-th utterance (0-based), keeping its id."""
    trans = ds / CHAPTER / "100-1000.trans.txt"
    lines = trans.read_text().splitlines(True)
    lines[line] = lines[line].split(" ")[0] + f" {text}\n"
    trans.write_text("".join(lines))


def test_edited_transcript(ds, capsys):
    _set_transcript(ds, 0, "SOMETHING ELSE")
    code, out = _run(ds, capsys)
    assert code == 1 and f"changed: {CHAPTER}/100-1000.trans.txt" in out
    assert "transcript differs: utterance 100-1000-0000" in out and "'SOMETHING ELSE'" in out


def test_non_ascii_transcript_is_a_named_problem(ds, capsys):
    _set_transcript(ds, 1, "STRAßE")
    code, out = _run(ds, capsys)
    assert (
        code == 1 and f"bad transcript: utterance 100-1000-0001 ({CHAPTER}/100-1000.trans.txt:2): character 'ß'" in out
    )
    assert out.rstrip().endswith("Dataset Checksum Failed.")


@pytest.mark.parametrize(
    "extra",
    [
        f"{CHAPTER}/notes.txt",
        "features/test-other/200-2000.npy.bak",
        "features/stray.npy",
        "features/dev-other/",
        "manifests/dev-clean.jsonl.orig",
        "manifests/.val.jsonl.tmp.host.123.abcd",
        "checksums/notes.txt",
        "checksums/dev-other.sha256.bak",
    ],
)
def test_extra_file(ds, capsys, extra):
    if extra.endswith("/"):
        (ds / extra).mkdir()
    else:
        (ds / extra).write_bytes(b"x")
    code, out = _run(ds, capsys)
    assert code == 1 and f"extra: {extra}" in out.splitlines()


def test_changed_feature_config_is_named(ds, capsys):
    """features.json says how the shards were made: another window there must not pass."""
    config = ds / "features/features.json"
    config.write_text(config.read_text().replace('"hamming"', '"hann"'))
    code, out = _run(ds, capsys)
    assert code == 1 and "changed: features/features.json" in out.splitlines()


def test_manifest_pointing_outside_its_shard(ds, capsys):
    manifest = ds / "manifests/test-other.jsonl"
    manifest.write_text(manifest.read_text().replace('"offset": 0', '"offset": 100000', 1))
    code, out = _run(ds, capsys)
    assert code == 1 and "changed: manifests/test-other.jsonl" in out and "features out of range: utterance" in out
    assert "changed: manifests/test.jsonl (not the merge of test-other)" in out


def _replace_line(path: Path, number: int, edit) -> None:
    lines = path.read_bytes().splitlines(True)
    lines[number - 1] = edit(lines[number - 1])
    path.write_bytes(b"".join(lines))


@pytest.mark.parametrize(
    "edit,problem",
    [
        (lambda line: line.replace(b'"transcript": "', b'"transcript": "\xff', 1), "not UTF-8 (byte 0xff"),
        (lambda line: re.sub(rb'"frames": (\d+)', rb'"frames": "\1"', line), "field 'frames' is str"),
        (lambda line: b"[1, 2]\n", "a JSON list, not an object"),
        (lambda line: b"{\n", "not JSON"),
    ],
)
def test_malformed_manifest_row_is_named_not_a_traceback(ds, capsys, edit, problem):
    _replace_line(ds / "manifests/test-other.jsonl", 2, edit)
    code, out = _run(ds, capsys)
    assert code == 1 and f"malformed: manifests/test-other.jsonl:2: {problem}" in out
    assert out.rstrip().endswith("Dataset Checksum Failed.")


def test_verdict_independent_of_mtimes(ds, capsys):
    code, before = _run(ds, capsys)
    for path in sorted(ds.rglob("*")):
        os.utime(path, (1_000_000_000, 1_000_000_000))
    code_after, after = _run(ds, capsys)
    assert code == code_after == 0 and before == after


def test_official_count_checked_when_the_official_archive_was_recorded(ds, capsys):
    cfg = download.Config(ds, librispeech.MIRROR, librispeech.official_md5s())
    (ds / ".state/download-dev-clean.done").write_text(cfg.md5_line("dev-clean"))  # exactly as download writes it
    code, out = _run(ds, capsys)
    assert code == 1 and "count: dev-clean has 6 utterances, the official archive 2703" in out
    assert "dev-clean.tar.gz: recorded md5 42e2234ba48799c1f50f24a7926300a1 = official" in out


def test_digest_is_the_sha256sum_of_sorted_audio_and_transcript_lines(ds, template):
    lines = sorted(
        (
            line
            for f in sorted((ds / "checksums").glob("*.sha256"))
            for line in f.read_text().splitlines(True)
            if line.split("  ", 1)[1].startswith("LibriSpeech/")
        ),
        key=lambda line: line.split("  ", 1)[1],
    )
    report = ver.verify(ds)
    assert report.passed
    assert report.digest == hashlib.sha256("".join(lines).encode()).hexdigest()
    _flip_byte(ds / CHAPTER / "100-1000-0001.flac")
    assert ver.verify(ds).digest != report.digest


def test_shell_wrapper(ds):
    result = subprocess.run(
        [str(REPO / "verify_dataset.sh"), "--data-dir", str(ds), "--jobs", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "Dataset Checksum Passed." in result.stdout
    (ds / "checksums/dev-clean.sha256").unlink()
    result = subprocess.run(
        [str(REPO / "verify_dataset.sh"), "--data-dir", str(ds)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1 and "missing: checksums/dev-clean.sha256" in result.stdout


def _unprivileged_verify(ds: Path, unreadable: Path) -> subprocess.CompletedProcess:
    mode = unreadable.stat().st_mode
    unreadable.chmod(0)
    try:
        command = unprivileged([str(REPO / "verify_dataset.sh"), "--data-dir", str(ds), "--jobs", "2"])
        return subprocess.run(command, capture_output=True, text=True, timeout=120)
    finally:
        unreadable.chmod(mode)


@pytest.mark.parametrize(
    "rel", [f"{CHAPTER}/100-1000-0001.flac", "LibriSpeech/dev-clean/101", "manifests/test-other.jsonl"]
)
def test_unreadable_file_is_a_problem_line_not_a_traceback(ds, rel):
    result = _unprivileged_verify(ds, ds / rel)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"unreadable: {rel}: permission denied" in result.stdout.splitlines()
    assert result.stdout.rstrip().endswith("Dataset Checksum Failed.")


def test_busy_dataset_dir_is_named_and_other_verifies_run_beside(ds, capsys):
    with DatasetDir(ds).lock("download_dataset.sh --jobs 4"):
        assert ver.main(["--data-dir", str(ds)]) == 1
    assert f"in use by another run: download_dataset.sh --jobs 4 (pid {os.getpid()}" in capsys.readouterr().err
    with DatasetDir(ds).lock("verify_dataset.sh", shared=True):
        code, out = _run(ds, capsys)
    assert code == 0 and "Dataset Checksum Passed." in out


def test_default_data_dir_is_the_one_rule(ds):
    env = dict(os.environ, DS2_DATA_DIR=str(ds))
    result = subprocess.run(
        [str(REPO / "verify_dataset.sh")], capture_output=True, text=True, timeout=120, cwd="/", env=env
    )
    assert result.returncode == 0 and "Dataset Checksum Passed." in result.stdout
    del env["DS2_DATA_DIR"]
    result = subprocess.run(
        [str(REPO / "verify_dataset.sh"), "--help"], capture_output=True, text=True, timeout=60, cwd="/", env=env
    )
    help_text = " ".join(result.stdout.split())
    assert "$DS2_DATA_DIR if set, else LibriSpeech_dataset in the repository" in help_text
    assert f"now {REPO / 'LibriSpeech_dataset'})" in help_text


def test_bad_jobs_is_a_usage_error(ds, capsys):
    assert ver.main(["--data-dir", str(ds), "--jobs", "0"]) == 2
    assert "--jobs 0: must be at least 1" in capsys.readouterr().err


def test_process_pool_hashes_as_one_process_does(ds):
    paths = sorted(p.relative_to(ds).as_posix() for p in ds.rglob("*") if p.is_file()) + ["no/such/file"]
    assert ver.hash_all(ds, paths, jobs=3) == ver.hash_all(ds, paths, jobs=1)
    assert ver.hash_all(ds, paths, jobs=3)["no/such/file"] == (None, "missing")


def test_every_failure_exits_through_the_one_contract(ds, tmp_path, capsys):
    """One `error:` line naming the directory and status 1, never a bare exit: no such directory, a
    failed check; a usage error is status 2 (test_bad_jobs_is_a_usage_error)."""
    assert ver.main(["--data-dir", str(tmp_path / "nowhere")]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == f"error: --data-dir {tmp_path / 'nowhere'}: no such directory"
    assert captured.out.strip() == "Dataset Checksum Failed."
    _flip_byte(ds / CHAPTER / "100-1000-0001.flac")
    (ds / "manifests/dev-clean.jsonl.orig").write_bytes(b"x")
    assert ver.main(["--data-dir", str(ds), "--jobs", "2"]) == 1
    captured = capsys.readouterr()
    assert captured.out.rstrip().endswith("Dataset Checksum Failed.")
    assert (
        captured.err.splitlines()[-1]
        == f"error: {ds}: 2 problems (listed above): the dataset is not as it was prepared"
    )
