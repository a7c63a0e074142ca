"""data.prepare on tiny LibriSpeech-format trees."""

import errno
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import params
from data import labels
from data import prepare as prep
from data.dataset_dir import DatasetDir
from data.features import extract
from data.librispeech import read_transcripts
from data.verify import verify
from tests.corpus import unprivileged, write_tree

TREE = {"dev-clean": (3, 3), "dev-other": (1, 2), "train-clean-100": (2, 3)}
KEYS = {"id", "subset", "duration", "frames", "transcript", "audio", "features", "offset"}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file's mtime and size, but the lock file's (each run names itself in it)."""
    return {
        str(f.relative_to(root)): (f.stat().st_mtime_ns, f.stat().st_size)
        for f in sorted(root.rglob("*"))
        if f.is_file() and f.name != ".lock"
    }


@pytest.fixture
def tree(tmp_path):
    return write_tree(tmp_path / "ds", TREE)


@pytest.fixture
def prepared(tree):
    prep.prepare(tree, None, params.make(), jobs=1)
    return tree


def test_subset_manifests_sorted_complete_and_match_shards(prepared):
    p = params.make()
    for subset, (chapters, per_chapter) in TREE.items():
        rows = _rows(prepared / "manifests" / f"{subset}.jsonl")
        assert len(rows) == chapters * per_chapter
        assert [(r["duration"], r["id"]) for r in rows] == sorted((r["duration"], r["id"]) for r in rows)
        shard_frames = {}
        for row in rows:
            assert set(row) == KEYS and row["subset"] == subset
            audio, rate = sf.read(prepared / row["audio"], dtype="float32")
            assert row["duration"] == round(len(audio) / rate, 4) and row["frames"] == 1 + len(audio) // 160
            shard = np.load(prepared / row["features"])
            assert shard.dtype == np.float16 and shard.shape[1] == 161
            stored = shard[row["offset"] : row["offset"] + row["frames"]]
            expected = extract(torch.from_numpy(audio), p).numpy().astype(np.float16)
            np.testing.assert_array_equal(stored, expected)
            shard_frames.setdefault(row["features"], [shard.shape[0], 0])[1] += row["frames"]
        assert all(total == used for total, used in shard_frames.values())  # shards hold nothing else
    assert json.loads((prepared / "features" / "features.json").read_text()) == p.feature_config()


def test_split_manifests_merge_their_subsets(prepared):
    val = _rows(prepared / "manifests" / "val.jsonl")
    members = _rows(prepared / "manifests" / "dev-clean.jsonl") + _rows(prepared / "manifests" / "dev-other.jsonl")
    assert val == sorted(members, key=lambda r: (r["duration"], r["id"]))
    assert _rows(prepared / "manifests" / "train.jsonl") == _rows(prepared / "manifests" / "train-clean-100.jsonl")
    assert not (prepared / "manifests" / "test.jsonl").exists()  # none of its subsets prepared


def test_checksums_list_every_file_sorted_with_its_sha256(prepared):
    lines = (prepared / "checksums" / "dev-other.sha256").read_text().splitlines()
    paths = [line.split("  ", 1)[1] for line in lines]
    assert paths == sorted(paths)
    on_disk = sorted(
        f.relative_to(prepared).as_posix()
        for d in ("LibriSpeech/dev-other", "features/dev-other")
        for f in (prepared / d).rglob("*")
        if f.is_file()
    )
    assert paths == sorted(on_disk + ["manifests/dev-other.jsonl", "features/features.json"])
    for line in lines:
        digest, path = line.split("  ", 1)
        assert hashlib.sha256((prepared / path).read_bytes()).hexdigest() == digest
    assert (prepared / ".state" / "prepare-dev-other.done").exists()


def test_rerun_does_no_work(prepared, monkeypatch):
    before = _snapshot(prepared)
    monkeypatch.setattr(prep, "process_chapter", lambda task: pytest.fail(f"re-processed {task.chapter}"))
    assert prep.main(["--data-dir", str(prepared), "--jobs", "1"]) == 0
    assert _snapshot(prepared) == before


def test_rerun_puts_right_a_split_left_stale_by_a_killed_run(prepared, capsys):
    """Killed after dev-other's marker but before the split rebuild: val.jsonl lacks dev-other."""
    val = prepared / "manifests" / "val.jsonl"
    good = val.read_bytes()
    val.write_bytes((prepared / "manifests" / "dev-clean.jsonl").read_bytes())
    assert prep.main(["--data-dir", str(prepared), "--jobs", "1"]) == 0
    assert val.read_bytes() == good
    err = capsys.readouterr().err
    assert "wrote manifests/val.jsonl" in err and "wrote manifests/train.jsonl" not in err
    assert not list((prepared / "manifests").glob(".*.tmp.*"))


def test_parallel_run_gives_the_same_dataset(tree, tmp_path):
    other = write_tree(tmp_path / "other", TREE)
    prep.prepare(tree, ["dev-clean"], params.make(), jobs=1)
    prep.prepare(other, ["dev-clean"], params.make(), jobs=2)
    for name in ("checksums/dev-clean.sha256", "manifests/dev-clean.jsonl", "manifests/val.jsonl"):
        assert (tree / name).read_text() == (other / name).read_text()


def test_damaged_shard_of_an_interrupted_run_is_recomputed(prepared):
    """A killed run's shard is never trusted: one flipped byte (same shape) is redone, not re-recorded."""
    shard = prepared / "features" / "dev-clean" / "100-1000.npy"
    good, expected = shard.read_bytes(), (prepared / "checksums" / "dev-clean.sha256").read_text()
    damaged = bytearray(good)
    damaged[-3] ^= 0x01
    shard.write_bytes(bytes(damaged))
    (prepared / ".state" / "prepare-dev-clean.done").unlink()  # as if killed before the marker
    stale = prepared / "features" / "dev-clean" / ".100-1000.npy.tmp.999"
    stale.write_bytes(b"half")
    prep.prepare(prepared, None, params.make(), jobs=1)
    assert shard.read_bytes() == good
    assert (prepared / "checksums" / "dev-clean.sha256").read_text() == expected
    assert not stale.exists()
    assert verify(prepared).passed


def test_shard_of_another_feature_config_is_recomputed(prepared):
    """--force with a new config un-marks the other subsets; their old same-shape shards are redone."""
    hann = params.make({"window": "hann"})
    prep.prepare(prepared, ["dev-other"], hann, jobs=1, force=True)
    prep.prepare(prepared, None, hann, jobs=1)
    row = _rows(prepared / "manifests" / "dev-clean.jsonl")[0]
    audio, _ = sf.read(prepared / row["audio"], dtype="float32")
    stored = np.load(prepared / row["features"])[row["offset"] : row["offset"] + row["frames"]]
    np.testing.assert_array_equal(stored, extract(torch.from_numpy(audio), hann).numpy().astype(np.float16))
    assert verify(prepared).passed


def test_truncated_shard_is_redone(prepared):
    shard = prepared / "features" / "dev-clean" / "100-1000.npy"
    good = shard.read_bytes()
    np.save(shard, np.load(shard)[:5])
    (prepared / ".state" / "prepare-dev-clean.done").unlink()
    prep.prepare(prepared, ["dev-clean"], params.make(), jobs=1)
    assert shard.read_bytes() == good


def _chapter(tree: Path) -> Path:
    return tree / "LibriSpeech" / "dev-clean" / "100" / "1000"


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            lambda c: (c / "100-1000.trans.txt").write_text(
                (c / "100-1000.trans.txt").read_text().replace("\n", " 3\n", 1)
            ),
            r"utterance 100-1000-0000 .*100-1000\.trans\.txt:1.*'3'",
        ),
        (
            lambda c: (c / "100-1000.trans.txt").write_text(
                (c / "100-1000.trans.txt").read_text().replace("\n", " STRAßE\n", 1)
            ),
            r"utterance 100-1000-0000 \(.*100-1000\.trans\.txt:1\): character 'ß' \(U\+00DF\)",
        ),
        (
            lambda c: (c / "100-1000.trans.txt").write_text(
                "".join((c / "100-1000.trans.txt").read_text().splitlines(True)[1:])
            ),
            r"utterance 100-1000-0000: .*100-1000-0000\.flac has no line in .*100-1000\.trans\.txt",
        ),
        (
            lambda c: (c / "100-1000-0001.flac").unlink(),
            r"utterance 100-1000-0001: listed in .*trans\.txt but .*100-1000-0001\.flac is missing",
        ),
        (
            lambda c: (c / "100-1000-0002.flac").write_bytes(b"fLaC" + bytes(100)),
            r"utterance 100-1000-0002: cannot decode .*100-1000-0002\.flac",
        ),
        (
            lambda c: sf.write(c / "100-1000-0002.flac", np.zeros(8000, np.float32), 8000),
            r"utterance 100-1000-0002: .*100-1000-0002\.flac is 8000 Hz, expected sample_rate=16000",
        ),
        (
            lambda c: sf.write(c / "100-1000-0002.flac", np.zeros((8000, 2), np.float32), 16000),
            r"100-1000-0002\.flac has 2 channels",
        ),
    ],
)
@pytest.mark.parametrize("jobs", [1, 2])
def test_bad_input_is_a_named_error_and_leaves_no_marker(tree, edit, message, jobs, capsys):
    edit(_chapter(tree))
    assert prep.main(["--data-dir", str(tree), "--subsets", "dev-clean", "--jobs", str(jobs)]) == 1
    assert re.search(message, capsys.readouterr().err)
    assert not (tree / ".state" / "prepare-dev-clean.done").exists()
    assert not (tree / "manifests" / "dev-clean.jsonl").exists()


@pytest.mark.parametrize("text,char", [("STRAßE", "ß"), ("ﬁVE", "ﬁ"), ("ſO", "ſ"), ("ıT", "ı"), ("CAFÉ", "É")])
def test_non_ascii_is_an_unknown_character_not_mapped_to_letters(text, char):
    with pytest.raises(labels.UnknownCharacter, match=re.escape(f"character {char!r} (U+{ord(char):04X})")):
        labels.normalise(f"THE {text} SAT")
    assert labels.normalise(" it's  a\tmat ") == "IT'S A MAT"


def test_other_feature_config_is_an_error_unless_forced(prepared, capsys):
    assert prep.main(["--data-dir", str(prepared), "window=hann"]) == 1
    err = capsys.readouterr().err
    assert "window: data 'hamming' vs params 'hann'" in err and "features.json" in err and "--force" in err
    assert prep.main(["--data-dir", str(prepared), "--subsets", "dev-other", "--force", "window_size=0.01"]) == 0
    assert np.load(prepared / "features" / "dev-other" / "200-2000.npy").shape[1] == 81
    assert json.loads((prepared / "features" / "features.json").read_text())["n_features"] == 81
    # subsets made with the old config are no longer marked prepared nor in the splits
    assert not (prepared / ".state" / "prepare-dev-clean.done").exists()
    assert {r["subset"] for r in _rows(prepared / "manifests" / "val.jsonl")} == {"dev-other"}


def test_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        prep.main(["--help"])
    assert exit_info.value.code == 0
    assert prep.main(["--data-dir", str(tmp_path)]) == 1
    assert "no extracted subsets" in capsys.readouterr().err
    assert prep.main(["--data-dir", str(tmp_path), "--subsets", "dev-cleen"]) == 2
    assert "unknown subset(s) dev-cleen" in capsys.readouterr().err
    assert prep.main(["--data-dir", str(tmp_path), "--jobs", "0"]) == 2
    assert "--jobs 0: must be at least 1" in capsys.readouterr().err
    assert prep.main(["--data-dir", str(tmp_path), "window_sise=0.01"]) == 2
    assert "window_sise" in capsys.readouterr().err
    assert prep.main(["--data-dir", str(tmp_path / "nowhere")]) == 1
    assert "nowhere: no such directory" in capsys.readouterr().err
    assert prep.main(["--data-dir", str(tmp_path), "--subsets", "dev-clean"]) == 1
    assert re.search(r"subset dev-clean: .*LibriSpeech/dev-clean does not exist", capsys.readouterr().err)


# ---------------------------------------------------------------- issue 11


@pytest.mark.parametrize("what,jobs", [("speaker directory", 1), ("chapter directory", 2), ("FLAC", 2)])
def test_unreadable_input_is_an_error_not_a_smaller_subset(tree, what, jobs):
    """Not 'prepared dev-clean: 6 utterances' (of 9) with exit 0: an error naming what cannot be read."""
    unreadable = {
        "speaker directory": tree / "LibriSpeech/dev-clean/101",
        "chapter directory": tree / "LibriSpeech/dev-clean/100/1002",
        "FLAC": tree / "LibriSpeech/dev-clean/100/1000/100-1000-0001.flac",
    }[what]
    mode = unreadable.stat().st_mode
    unreadable.chmod(0)
    try:
        argv = [sys.executable, "-m", "data.prepare", "--data-dir", str(tree), "--subsets", "dev-clean"]
        result = subprocess.run(unprivileged([*argv, "--jobs", str(jobs)]), capture_output=True, text=True, timeout=120)
    finally:
        unreadable.chmod(mode)
    assert result.returncode == 1, result.stderr
    assert f"error: {unreadable}: permission denied" in result.stderr and "Traceback" not in result.stderr
    assert not (tree / ".state" / "prepare-dev-clean.done").exists()
    assert not (tree / "manifests" / "dev-clean.jsonl").exists()


def test_full_disk_names_the_file_and_marks_nothing(tree, monkeypatch, capsys):
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a short write to a full disk: no file name

    monkeypatch.setattr(np.lib.format, "write_array_header_1_0", full_disk)
    assert prep.main(["--data-dir", str(tree), "--subsets", "dev-clean", "--jobs", "1"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"error: \S+/features/dev-clean/\d+-\d+\.npy: no space left on the device; free some space", err)
    assert "Traceback" not in err and not (tree / ".state" / "prepare-dev-clean.done").exists()
    assert not list((tree / "features" / "dev-clean").glob(".*.tmp.*"))


def test_run_on_a_busy_dataset_dir_stops_naming_the_holder(tree, capsys):
    with DatasetDir(tree).lock("download_dataset.sh --jobs 4"):
        assert prep.main(["--data-dir", str(tree), "--jobs", "1"]) == 1
    err = capsys.readouterr().err
    assert f"{tree} is in use by another run: download_dataset.sh --jobs 4 (pid {os.getpid()}" in err
    assert not (tree / ".state" / "prepare-dev-clean.done").exists()


def test_default_data_dir_comes_from_the_environment(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("DS2_DATA_DIR", str(tree))
    monkeypatch.chdir(tmp_path)
    assert prep.main(["--subsets", "dev-other", "--jobs", "1"]) == 0
    assert (tree / ".state" / "prepare-dev-other.done").is_file()


def test_tab_after_the_utterance_id_separates_it_from_the_transcript(tree):
    trans = _chapter(tree) / "100-1000.trans.txt"
    original = trans.read_text()
    trans.write_text(original.replace(" ", "\t", 1))  # the first line: "<id>\tWORDS ..."
    expected, problems = read_transcripts(original.encode(), "100-1000-", "original")
    assert problems == [] and read_transcripts(trans.read_bytes(), "100-1000-", str(trans)) == (expected, [])
    prep.prepare(tree, ["dev-clean"], params.make(), jobs=1)
    rows = {r["id"]: r["transcript"] for r in _rows(tree / "manifests" / "dev-clean.jsonl")}
    assert all(rows[uid] == text for uid, text in expected.items())


def _children(pid: int) -> set[int]:
    """Live (not zombie) processes whose parent is pid, from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            state, ppid = entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError, IndexError):
            continue
        if int(ppid) == pid and state != "Z":
            found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _reader_waiting(fifo: Path) -> int | None:
    """A write end of the FIFO once some process has it open for reading (it then blocks reading
    it for as long as the write end stays open), else None."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as err:
        if err.errno != errno.ENXIO:  # ENXIO: no reader yet
            raise
        return None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_pool_workers_die_with_a_killed_parent(tree):
    """A worker busy with a chapter when its parent is SIGKILLed (here: blocked reading a transcript
    that is a FIFO) must not run on: multiprocessing alone lets it finish (or hang) as an orphan."""
    trans = _chapter(tree) / "100-1000.trans.txt"
    trans.unlink()
    os.mkfifo(trans)
    argv = [sys.executable, "-m", "data.prepare", "--data-dir", str(tree), "--subsets", "dev-clean", "--jobs", "2"]
    parent = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers, writer = set(), None
    try:
        deadline = time.monotonic() + 60
        while writer is None and time.monotonic() < deadline and parent.poll() is None:
            writer = _reader_waiting(trans)
            time.sleep(0.02)
        assert writer is not None, "no worker ever opened the chapter's transcript"
        workers = _children(parent.pid)
        assert len(workers) == 2
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 5
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in workers if _alive(pid)], "workers outlived their killed parent"
    finally:
        parent.kill()
        parent.wait()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if writer is not None:
            os.close(writer)
