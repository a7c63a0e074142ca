"""pytorch.lm: the modified Kneser-Ney ARPA builder, checked by hand and through KenLM's own queries."""

import gzip
import math
import random

import pytest

from pytorch import beam, lm
from tests import trainer_fixtures

pytest.importorskip("flashlight.lib.text", reason="flashlight-text (KenLM) is not installed for this platform")


def kenlm_of(path, words):
    """(flashlight's KenLM over path, its word Dictionary, KenLM's load warnings)."""
    _, dictionary, KenLM = beam.flashlight()
    vocab = dictionary.Dictionary([*words, "<unk>"])
    with beam.captured_stderr() as chatter:
        model = KenLM(str(path), vocab)
    return model, vocab, beam.kenlm_warnings(chatter)


def probabilities(model, vocab, context: list[str], words: list[str]) -> dict[str, float]:
    """p(w | <s> context) for each w (</s> included when listed), from KenLM's scores (log10)."""
    state = model.start(False)
    for word in context:
        state, _ = model.score(state, vocab.get_index(word))
    out = {}
    for word in words:
        _, score = model.finish(state) if word == "</s>" else model.score(state, vocab.get_index(word))
        out[word] = 10**score
    return out


def build_file(tmp_path, lines, order, name="lm.arpa"):
    text = tmp_path / "text.txt"
    text.write_text("".join(line + "\n" for line in lines))
    out = tmp_path / name
    assert lm.main(["--order", str(order), "--out", str(out), str(text)]) == 0
    return out


def test_toy_bigram_matches_the_hand_counted_probabilities(tmp_path):
    """Corpus "A B", "A B", "B". Bigram counts: <s>A 2, AB 2, B</s> 3, <s>B 1 (t1..t4 = 1,2,1,0).
    Unigram continuation counts: A 1 ({<s>}), B 2 ({A, <s>}), </s> 1 ({B}) (t = 2,1,0,0). Both orders
    have a zero count of counts, so the discounts fall back to 0.5, 1, 1.5.
    Unigrams over V = {A, B, </s>, <unk>}, total 4, gamma = (0.5*2 + 1*1)/4 = 0.5, uniform 0.5/4:
      p(A) = 0.5/4 + 0.125 = 0.25, p(B) = 1/4 + 0.125 = 0.375, p(</s>) = 0.25, p(<unk>) = 0.125.
    Context <s> (total 3; A: 2 -> D 1, B: 1 -> D 0.5; gamma = 1.5/3 = 0.5):
      p(A|<s>) = 1/3 + 0.5*0.25 = 0.458333, p(B|<s>) = 0.5/3 + 0.5*0.375 = 0.354167, p(</s>|<s>) = 0.125.
    Context A (B: 2, gamma 1/2): p(B|A) = 1/2 + 0.5*0.375 = 0.6875, p(</s>|A) = 0.5*0.25 = 0.125 (backoff).
    Context B (</s>: 3, gamma 1.5/3): p(</s>|B) = 1.5/3 + 0.5*0.25 = 0.625, p(A|B) = 0.5*0.25 = 0.125."""
    path = build_file(tmp_path, ["A B", "A B", "B"], order=2)
    model, vocab, warnings = kenlm_of(path, ["A", "B"])
    assert warnings == []
    expected = {
        (): {"A": 0.458333, "B": 0.354167, "</s>": 0.125},
        ("A",): {"B": 0.6875, "</s>": 0.125, "A": 0.5 * 0.25},
        ("B",): {"</s>": 0.625, "A": 0.125, "B": 0.5 * 0.375},
    }
    for context, wanted in expected.items():
        got = probabilities(model, vocab, list(context), list(wanted))
        assert got == pytest.approx(wanted, abs=2e-6), context
    # The unigrams as written in the file, context-free (log10).
    text = path.read_text()
    assert "-0.60206\tA\t-0.30103" in text and "-0.4259687\tB\t-0.30103" in text and "-0.90309\t<unk>" in text


def zipf_sentences(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = [f"W{i}" for i in range(300)]
    weights = [1 / (i + 1) for i in range(len(words))]
    return [" ".join(rng.choices(words, weights, k=rng.randint(1, 8))) for _ in range(count)]


def test_every_context_of_a_trigram_model_is_a_distribution(tmp_path):
    """On enough text for real discounts, p(. | h) sums to 1 over the vocabulary and </s> for seen,
    backed-off and unseen contexts alike (KenLM's queries, so the ARPA's backoffs are right too)."""
    sentences = zipf_sentences(1500, seed=1)
    model_built = lm.build((s.split() for s in sentences), 3)
    assert not any(d.fallback for d in model_built.discounts)
    assert all(0 < dk < k for d in model_built.discounts for k, dk in enumerate(d.d, 1))
    path = build_file(tmp_path, sentences, order=3)
    words = sorted({w for s in sentences for w in s.split()})
    model, vocab, warnings = kenlm_of(path, words)
    assert warnings == []
    for context in ([], ["W0"], ["W0", "W1"], ["W299", "W298"], ["W5", "W5"]):
        total = sum(probabilities(model, vocab, context, [*words, "</s>", "<unk>"]).values())
        assert total == pytest.approx(1.0, abs=1e-4), context


def test_a_file_without_unk_gives_a_kenlm_warning(tmp_path):
    """The warnings check can fail: KenLM complains about an ARPA lacking <unk>."""
    path = build_file(tmp_path, ["A B", "B"], order=2)
    lines = [line for line in path.read_text().splitlines() if "<unk>" not in line]
    broken = tmp_path / "broken.arpa"
    broken.write_text("\n".join(line.replace("ngram 1=5", "ngram 1=4") for line in lines) + "\n")
    _, _, warnings = kenlm_of(broken, ["A", "B"])
    assert any("missing <unk>" in w for w in warnings)


def test_vocabulary_is_read_from_plain_and_gzipped_arpa(tmp_path):
    path = build_file(tmp_path, ["THE CAT", "A DOG"], order=2)
    gz = tmp_path / "lm.arpa.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert sorted(lm.read_vocabulary(path)) == ["A", "CAT", "DOG", "THE"]
    assert lm.read_vocabulary(gz) == lm.read_vocabulary(path)
    not_arpa = tmp_path / "x.arpa"
    not_arpa.write_text("hello\n")
    with pytest.raises(lm.LMError, match="x.arpa: not an ARPA file"):
        lm.read_vocabulary(not_arpa)


def test_words_are_upper_cased_and_reserved_tokens_refused(tmp_path, capsys):
    path = build_file(tmp_path, ["the Cat"], order=1)
    assert sorted(lm.read_vocabulary(path)) == ["CAT", "THE"]
    bad = tmp_path / "bad.txt"
    bad.write_text("A B\nA </s> B\n")
    assert lm.main(["--out", str(tmp_path / "o.arpa"), str(bad)]) == 1
    assert f"{bad}:2: holds the reserved token '</s>'" in capsys.readouterr().err
    assert not (tmp_path / "o.arpa").exists()


def test_builds_from_a_training_split_and_refuses_held_out_ones(tmp_path, capsys):
    data_dir = trainer_fixtures.write_dataset(tmp_path / "data")
    out = tmp_path / "train.arpa"
    assert lm.main(["--order", "2", "--out", str(out), "--data-dir", str(data_dir), "--split", "train"]) == 0
    assert set(lm.read_vocabulary(out)) == {w for t in trainer_fixtures.TRAIN_TRANSCRIPTS for w in t.split()}
    for held_out in ("val", "dev-clean", "test"):
        assert lm.main(["--out", str(tmp_path / "v.arpa"), "--data-dir", str(data_dir), "--split", held_out]) == 2
        assert f"--split {held_out}: a held-out split" in capsys.readouterr().err
    assert lm.main(["--out", str(tmp_path / "m.arpa"), "--data-dir", str(data_dir), "--split", "nope"]) == 1
    assert "nope.jsonl" in capsys.readouterr().err


def test_bad_usage_exits_2(tmp_path):
    for argv in (["--out", "x.arpa"], ["--order", "0", "--out", "x", "t.txt"], ["--split", "train", "--out", "x"]):
        with pytest.raises(SystemExit) as exit_info:
            lm.parse_args(argv)
        assert exit_info.value.code == 2


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        lm.parse_args(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "Kneser-Ney" in out and "--order" in out


def test_unigram_model_sums_to_one():
    model = lm.build([["A", "B"], ["A"]], 1)
    assert sum(10**p for g, p in model.probabilities[0].items() if g != ("<s>",)) == pytest.approx(1.0)
    assert math.isclose(model.probabilities[0][("<s>",)], lm.NEVER)
