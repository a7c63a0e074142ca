"""pytorch.beam and pytorch.decoders: CTC beam search with and without a word n-gram LM."""

import argparse
import math
import sys

import pytest
import torch

import exit_status
from data.labels import BLANK, LABELS
from pytorch import beam, decoders, lm
from pytorch.decode import greedy_decode

pytest.importorskip("flashlight.lib.text", reason="flashlight-text (KenLM) is not installed for this platform")


def emissions_spelling(frames: list[dict[str, float]]) -> torch.Tensor:
    """(T, 1, 29) log-probabilities: each frame's listed labels get their probability, the rest of
    the mass is spread evenly over the other labels."""
    out = torch.empty(len(frames), 1, len(LABELS))
    for t, probs in enumerate(frames):
        rest = (1.0 - sum(probs.values())) / (len(LABELS) - len(probs))
        row = torch.full((len(LABELS),), rest)
        for label, p in probs.items():
            row[LABELS.index(label)] = p
        out[t, 0] = row.log()
    return out


def word_frames(text: str, frames_per_label: int = 2) -> list[dict[str, float]]:
    """A confident spelling of text: each character for some frames, then a blank."""
    out = []
    for char in text:
        out += [{char: 0.9}] * frames_per_label + [{"_": 0.9}]
    return out


def test_beam_size_1_without_lm_equals_greedy_on_random_log_probs():
    search = beam.BeamSearch(beam.BeamOptions(beam_size=1))
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        frames = int(torch.randint(1, 60, (1,), generator=g))
        log_probs = torch.log_softmax(3 * torch.randn(frames, 3, len(LABELS), generator=g), dim=-1)
        lengths = torch.tensor([frames, frames // 2, 0])
        assert search.decode(log_probs, lengths) == greedy_decode(log_probs, lengths), seed


def test_a_wider_beam_finds_the_transcript_greedy_misses():
    """Two frames, blank 0.6 and A 0.4 each: the best path is blank-blank (0.36, the empty
    transcript), but "A" has three paths summing to 0.64. A beam that sums paths finds it."""
    log_probs = emissions_spelling([{"_": 0.6, "A": 0.399}, {"_": 0.6, "A": 0.399}])
    lengths = torch.tensor([2])
    assert greedy_decode(log_probs, lengths) == [""]
    assert beam.BeamSearch(beam.BeamOptions(beam_size=8)).decode(log_probs, lengths) == ["A"]


@pytest.fixture(scope="module")
def cat_lm(tmp_path_factory):
    """A bigram LM of "THE CAT SAT" and "A BAT FLEW": both BAT and CAT are words, but only CAT sits."""
    root = tmp_path_factory.mktemp("lm")
    text = root / "text.txt"
    text.write_text("THE CAT SAT\n" * 10 + "A BAT FLEW\n" * 10)
    assert lm.main(["--order", "2", "--out", str(root / "cat.arpa"), str(text)]) == 0
    return root / "cat.arpa"


def ambiguous_cat() -> torch.Tensor:
    """THE ?AT SAT, where the acoustics favour B (0.5) over C (0.4) for the middle word's first letter."""
    frames = word_frames("THE") + [{" ": 0.9}]
    frames += [{"B": 0.5, "C": 0.4}] * 2 + [{"_": 0.9}] + word_frames("AT") + [{" ": 0.9}] + word_frames("SAT")
    return emissions_spelling(frames)


def test_the_lm_picks_its_sentence_where_the_acoustics_are_ambiguous(cat_lm):
    log_probs, lengths = ambiguous_cat(), torch.tensor([ambiguous_cat().shape[0]])
    assert greedy_decode(log_probs, lengths) == ["THE BAT SAT"]
    assert beam.BeamSearch(beam.BeamOptions(beam_size=16)).decode(log_probs, lengths) == ["THE BAT SAT"]
    model = beam.load_language_model(cat_lm)
    assert model.warnings == [] and model.vocabulary == 6
    with_lm = beam.BeamSearch(beam.BeamOptions(beam_size=16, lm_weight=1.0), model)
    assert with_lm.decode(log_probs, lengths) == ["THE CAT SAT"]
    # The LM is what changes it: at weight 0 the lexicon alone keeps the acoustics' choice.
    no_weight = beam.BeamSearch(beam.BeamOptions(beam_size=16, lm_weight=0.0), model)
    assert no_weight.decode(log_probs, lengths) == ["THE BAT SAT"]


def test_the_lexicon_constrains_the_words(cat_lm, tmp_path):
    """Only lexicon words come out; --lexicon replaces the ARPA's words (a word the labels cannot
    spell is left out and counted)."""
    lexicon = tmp_path / "words.txt"
    lexicon.write_text("the\nbat\nsat\nfl3w\n")
    model = beam.load_language_model(cat_lm, lexicon)
    assert (model.vocabulary, model.unspellable) == (3, 1)
    log_probs = ambiguous_cat()
    search = beam.BeamSearch(beam.BeamOptions(beam_size=16, lm_weight=1.0), model)
    assert search.decode(log_probs, torch.tensor([log_probs.shape[0]])) == ["THE BAT SAT"]


def test_unusable_lm_files_are_named(tmp_path):
    garbage = tmp_path / "garbage.arpa"
    garbage.write_text("not a language model\n")
    with pytest.raises(beam.LanguageModelError, match="garbage.arpa: not an ARPA file"):
        beam.load_language_model(garbage)
    with pytest.raises(beam.LanguageModelError, match="missing.arpa: no such file"):
        beam.load_language_model(tmp_path / "missing.arpa")
    binary = tmp_path / "lm.bin"
    binary.write_bytes(beam.KENLM_BINARY_MAGIC + b"http://kheafield.com/code format version 5\n\0")
    with pytest.raises(exit_status.UsageError, match="lm.bin is a KenLM binary.*--lexicon"):
        beam.load_language_model(binary)
    lexicon = tmp_path / "words.txt"
    lexicon.write_text("A\n")
    with pytest.raises(beam.LanguageModelError, match="lm.bin: not a usable ARPA or KenLM binary"):
        beam.load_language_model(binary, lexicon)


def test_without_flashlight_the_beam_decoder_says_how_to_get_it(monkeypatch):
    for name in [n for n in sys.modules if n.split(".")[0] == "flashlight"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: every import of it fails
    with pytest.raises(beam.DecoderUnavailable, match="pip install flashlight-text==0.0.7"):
        beam.BeamSearch(beam.BeamOptions())


def parse(argv, default="greedy"):
    parser = argparse.ArgumentParser()
    decoders.add_arguments(parser, default)
    return decoders.config_from_args(parser.parse_args(argv))


def test_decoder_options():
    assert parse([]) == decoders.DecoderConfig("greedy")
    assert parse([], default=None) is None
    config = parse(["--decoder", "beam", "--beam-size", "4", "--lm", "x.arpa", "--lm-weight", "1.5"])
    assert config.kind == "beam" and config.beam.beam_size == 4 and config.beam.lm_weight == 1.5
    assert str(config.lm) == "x.arpa" and config.beam.word_score == beam.BeamOptions().word_score
    for argv, message in (
        (["--lm", "x.arpa"], "--lm is an option of --decoder beam"),
        (["--decoder", "beam", "--beam-size", "0"], "--beam-size 0: must be at least 1"),
        (["--decoder", "beam", "--beam-threshold", "-1"], "--beam-threshold -1.0: must be a positive number"),
        (["--decoder", "beam", "--lm-weight", "1"], "--lm-weight needs --lm FILE"),
        (["--decoder", "beam", "--lm", "x", "--word-score", "nan"], "--word-score nan: must be a finite number"),
    ):
        with pytest.raises(exit_status.UsageError, match=message):
            parse(argv)
    with pytest.raises(exit_status.UsageError, match="add --decoder beam"):
        parse(["--beam-size", "2"], default=None)


def test_make_decoder_describes_what_it_does(cat_lm):
    assert decoders.make_decoder(decoders.DecoderConfig()).description == "greedy"
    described = decoders.make_decoder(decoders.DecoderConfig("beam", beam.BeamOptions(beam_size=3), cat_lm))
    assert "beam 3" in described.description and "cat.arpa over 6 words" in described.description
    retuned = described.with_weights(2.0, -1.0)
    assert (retuned.options.lm_weight, retuned.options.word_score, retuned.lm) == (2.0, -1.0, described.lm)
    assert math.isclose(beam.BeamOptions().beam_threshold, 25.0) and BLANK == 0
