"""The synthetic espeak-ng corpus: LibriSpeech's layout and formats, reproducibility, held-out splits."""

import hashlib
import io
import platform
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import soundfile

from data import labels
from synthetic import corpus as synthesize_module
from synthetic.corpus import SynthesisError, synthesize
from synthetic.sentences import pool_for_subset, sentences

COUNTS = {"dev-clean": 4, "train-clean-100": 6}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    synthesize(out, COUNTS, seed=3, jobs=2)
    return out


def members(archive: Path) -> dict[str, bytes]:
    """Regular files of a tar.gz: name -> content, in archive order."""
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def run_cli(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "synthetic.corpus", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_layout_and_audio_format(corpus):
    for subset, count in COUNTS.items():
        files = members(corpus / f"{subset}.tar.gz")
        flacs = [name for name in files if name.endswith(".flac")]
        assert len(flacs) == count
        for name in flacs:
            _, top, speaker, chapter, filename = name.split("/")
            assert (name.split("/")[0], top) == ("LibriSpeech", subset)
            assert filename.startswith(f"{speaker}-{chapter}-") and len(filename.split("-")[2]) == len("0000.flac")
            info = soundfile.info(io.BytesIO(files[name]))
            assert (info.samplerate, info.channels, info.format, info.subtype) == (16000, 1, "FLAC", "PCM_16")
            assert 0.5 < info.duration < 6.0, f"{name}: {info.duration} s"


def test_transcripts_match_flacs_and_labels(corpus):
    for subset in COUNTS:
        files = members(corpus / f"{subset}.tar.gz")
        flac_ids = {name.rsplit("/", 1)[1].removesuffix(".flac") for name in files if name.endswith(".flac")}
        transcript_ids = set()
        for name in (n for n in files if n.endswith(".trans.txt")):
            lines = files[name].decode().splitlines()
            assert lines == sorted(lines), name
            chapter_prefix = name.rsplit("/", 1)[1].removesuffix(".trans.txt") + "-"
            for line in lines:
                uid, text = line.split(" ", 1)
                assert uid.startswith(chapter_prefix) and f"{name.rsplit('/', 1)[0]}/{uid}.flac" in files
                assert text == labels.normalise(text) and labels.encode(text)
                transcript_ids.add(uid)
        assert transcript_ids == flac_ids


def test_speakers_differ_between_subsets(corpus):
    speakers = {s: {name.split("/")[2] for name in members(corpus / f"{s}.tar.gz")} for s in COUNTS}
    assert len(speakers["dev-clean"]) >= 2 and not speakers["dev-clean"] & speakers["train-clean-100"]


def test_md5sum_file_matches_archives(corpus):
    lines = (corpus / "md5sum.txt").read_text().splitlines()
    expected = [f"{hashlib.md5((corpus / f'{s}.tar.gz').read_bytes()).hexdigest()}  {s}.tar.gz" for s in sorted(COUNTS)]
    assert lines == expected
    assert not [p for p in corpus.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_same_seed_same_bytes_different_seed_different(corpus, tmp_path):
    # one process instead of two: the bytes must not depend on the job count either
    synthesize(tmp_path / "again", COUNTS, seed=3, jobs=1)
    assert (tmp_path / "again" / "md5sum.txt").read_text() == (corpus / "md5sum.txt").read_text()
    synthesize(tmp_path / "other", {"dev-clean": 4}, seed=4, jobs=1)
    assert (tmp_path / "other" / "dev-clean.tar.gz").read_bytes() != (corpus / "dev-clean.tar.gz").read_bytes()


def test_interrupted_resynthesis_leaves_no_stale_md5sum(corpus, tmp_path, monkeypatch):
    out = Path(shutil.copytree(corpus, tmp_path / "out"))
    real, written = synthesize_module.write_archive, []

    def interrupted_after_one(path, *args):
        if written:
            raise KeyboardInterrupt
        written.append(path)
        return real(path, *args)

    monkeypatch.setattr(synthesize_module, "write_archive", interrupted_after_one)
    with pytest.raises(KeyboardInterrupt):
        synthesize(out, COUNTS, seed=4, jobs=1)
    assert written == [out / "dev-clean.tar.gz"]
    assert not (out / "md5sum.txt").exists()  # the old one would not match the new dev-clean.tar.gz


def test_subsets_of_one_split_do_not_share_sentences(tmp_path):
    synthesize(tmp_path, {"dev-clean": 3, "dev-other": 3}, seed=1, jobs=1)
    texts = {}
    for subset in ("dev-clean", "dev-other"):
        transcripts = [
            d.decode() for n, d in members(tmp_path / f"{subset}.tar.gz").items() if n.endswith(".trans.txt")
        ]
        texts[subset] = [line.split(" ", 1)[1] for t in transcripts for line in t.splitlines()]
    assert len(texts["dev-clean"]) == 3 and not set(texts["dev-clean"]) & set(texts["dev-other"])


def test_held_out_sentences_never_in_train():
    train = set(sentences("train", 5000, seed=1)) | set(sentences("train", 5000, seed=2))
    dev, test = sentences("dev", 2000, seed=1), sentences("test", 2000, seed=1)
    assert len(dev) == len(set(dev)) == 2000 and len(train) > 9000
    assert not train & set(dev) and not train & set(test) and not set(dev) & set(test)
    for text in dev[:200]:
        labels.encode(text)


def test_sentences_are_deterministic_and_prefix_stable():
    assert sentences("train", 50, seed=7) == sentences("train", 50, seed=7)
    assert sentences("train", 30, seed=7) == sentences("train", 50, seed=7)[:30]
    assert sentences("train", 50, seed=7) != sentences("train", 50, seed=8)


def test_subset_names_map_to_splits():
    assert [pool_for_subset(s) for s in ("train-other-500", "dev-clean", "test-other")] == ["train", "dev", "test"]
    with pytest.raises(ValueError, match="validation"):
        pool_for_subset("validation")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("dev-cleen:3", "'dev-cleen': not a LibriSpeech subset"),
        ("dev-clean:0", "COUNT must be"),
        ("dev-clean:two", "COUNT must be"),
        ("dev-clean", "expected NAME:COUNT"),
        ("dev-clean:1,dev-clean:2", "given twice"),
    ],
)
def test_cli_rejects_bad_subsets(tmp_path, spec, message):
    result = run_cli("--out", str(tmp_path), "--subsets", spec)
    assert result.returncode != 0 and message in result.stderr
    assert not list(tmp_path.iterdir())


def test_api_rejects_bad_requests(tmp_path):
    with pytest.raises(SynthesisError, match="'dev-cleen'"):
        synthesize(tmp_path, {"dev-cleen": 2})
    with pytest.raises(SynthesisError, match="count -1"):
        synthesize(tmp_path, {"dev-clean": -1})


def test_cli_without_the_espeak_wheel_says_how_to_install_it(tmp_path):
    # sys.modules[name] = None makes `import name` fail as if the wheel were not installed
    code = (
        "import sys; sys.modules['espeakng_loader'] = None; from synthetic import corpus; "
        f"sys.exit(corpus.main(['--out', {str(tmp_path / 'out')!r}, '--subsets', 'dev-clean:1']))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "espeakng-loader wheel is not installed" in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_utterance_sounds_the_same_whatever_was_spoken_before_it():
    # libespeak-ng keeps state across utterances (pitch flutter phase, noise generator); each is
    # spoken from the same state, so the corpus cannot depend on how utterances fall into batches
    a = synthesize_module.Utterance("1-2-0000", "THE QUICK BROWN FOX", "en+f2", 170, 40)
    b = synthesize_module.Utterance("1-2-0001", "SOMETHING ELSE ENTIRELY", "en-us+m7", 150, 60)
    first, _, again, _, last = synthesize_module.speak([a, b, a, b, a])
    assert len(first) > 8000 and first.tobytes() == again.tobytes() == last.tobytes()
    assert synthesize_module.speak([a])[0].tobytes() == first.tobytes()


def test_an_unknown_voice_names_the_utterance():
    bad = synthesize_module.Utterance("1-2-0007", "HELLO", "en-nowhere", 170, 40)
    with pytest.raises(SynthesisError, match="utterance 1-2-0007: voice 'en-nowhere'"):
        synthesize_module.speak([bad])


# The md5s the docs quote (README.md or docs/, "GPU machines"), so that anyone can compare on their
# machine. They were compared on x86_64 only: other CPUs may round espeak-ng's or soxr's floating
# point otherwise, so there the test asks only that the corpus is the same bytes run after run.
README_CORPUS = {"train-clean-100": 20, "dev-clean": 5}
README_MD5SUM = """\
5c82209b7f8d23529f99731fb4311f6c  dev-clean.tar.gz
fb00b51ca3fae2685214086df018d04e  train-clean-100.tar.gz
"""
COMPARED_ON = ("x86_64",)


def _docs() -> str:
    """README.md and every docs/**/*.md, where the user reads the md5s."""
    root = Path(__file__).resolve().parents[1]
    pages = [root / "README.md", *sorted((root / "docs").glob("**/*.md"))]
    return "\n".join(page.read_text() for page in pages if page.is_file())


def test_the_small_seeded_corpus_has_the_md5s_the_docs_state(tmp_path):
    docs = _docs()
    assert "synthetic/synthesize.sh --out /tmp/ds2-corpus --subsets train-clean-100:20,dev-clean:5 --seed 1" in docs
    assert README_MD5SUM in docs
    synthesize(tmp_path / "a", README_CORPUS, seed=1, jobs=2)
    made = (tmp_path / "a" / "md5sum.txt").read_text()
    if platform.machine() in COMPARED_ON:
        assert made == README_MD5SUM
    else:
        synthesize(tmp_path / "b", README_CORPUS, seed=1, jobs=1)
        assert (tmp_path / "b" / "md5sum.txt").read_text() == made


def test_cli_help_and_shell_wrapper():
    result = run_cli("--help")
    assert result.returncode == 0 and "--subsets" in result.stdout
    script = Path(__file__).resolve().parents[1] / "synthetic" / "synthesize.sh"
    wrapped = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert wrapped.returncode == 0 and wrapped.stdout == result.stdout
