"""The one decoding interface of pytorch.evaluate, pytorch.transcribe, pytorch.tune_lm and the benches:
greedy (the benchmark's metric, and the default everywhere) or CTC beam search with an optional word
n-gram LM (pytorch.beam), and the command-line options that choose one.

    decoder = make_decoder(config_from_args(args))     # after add_arguments(parser)
    decoder.decode(log_probs (T, N, C), lengths (N,)) -> N transcripts

Training never decodes with anything but greedy_decode: the quality target is defined on it.
"""

import argparse
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import torch

import exit_status
from pytorch.beam import BeamOptions, BeamSearch, LanguageModel, load_language_model
from pytorch.decode import greedy_decode

KINDS = ("greedy", "beam")


class Decoder(Protocol):
    description: str

    def decode(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]: ...


class GreedyDecoder:
    """Best label per frame, repeats merged, blanks dropped (pytorch.decode.greedy_decode)."""

    description = "greedy"

    def decode(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        return greedy_decode(log_probs, lengths)


class BeamDecoder:
    """pytorch.beam.BeamSearch with a description of its settings."""

    def __init__(self, options: BeamOptions, lm: LanguageModel | None = None):
        self.options, self.lm = options, lm
        self._search = BeamSearch(options, lm)
        self.description = describe_beam(options, lm)

    def decode(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        return self._search.decode(log_probs, lengths)

    def with_weights(self, lm_weight: float, word_score: float) -> "BeamDecoder":
        """The same search and LM (not loaded again) with other LM weights: what tuning varies."""
        return BeamDecoder(replace(self.options, lm_weight=lm_weight, word_score=word_score), self.lm)


def describe_beam(options: BeamOptions, lm: LanguageModel | None, weights: bool = True) -> str:
    """What a beam search does, in words; weights False leaves the LM weights out (a search varies them)."""
    text = f"beam search (beam {options.beam_size}, threshold {options.beam_threshold:g}"
    if lm is None:
        return text + ", no LM, lexicon-free)"
    text += f", LM {lm.path} over {lm.vocabulary:,} words"
    return text + (f", lm_weight {options.lm_weight:g}, word_score {options.word_score:g})" if weights else ")")


@dataclass(frozen=True)
class DecoderConfig:
    """The decoder a command was asked for (before any LM is loaded)."""

    kind: str = "greedy"
    beam: BeamOptions = BeamOptions()
    lm: Path | None = None
    lexicon: Path | None = None


def add_arguments(parser: argparse.ArgumentParser, default: str | None = "greedy") -> None:
    """--decoder and the beam search's options. default None: no decoder unless --decoder is given
    (bench.inference_latency, which times the model alone by default)."""
    group = parser.add_argument_group("decoding")
    defaults = BeamOptions()
    group.add_argument(
        "--decoder",
        choices=KINDS,
        default=default,
        help=f"greedy (the benchmark's metric) or CTC beam search (default: {default or 'none, the model alone'})",
    )
    group.add_argument("--beam-size", type=int, help=f"beam: hypotheses kept per frame (default {defaults.beam_size})")
    group.add_argument(
        "--beam-threshold",
        type=float,
        help=f"beam: drop hypotheses this far (natural log) below the best (default {defaults.beam_threshold:g})",
    )
    group.add_argument(
        "--lm",
        type=Path,
        metavar="FILE",
        help="beam: word n-gram LM, ARPA (plain or .gz) or KenLM binary; from python -m pytorch.lm or "
        "download_dataset.sh --lm (default: none, a lexicon-free search)",
    )
    group.add_argument(
        "--lexicon",
        type=Path,
        metavar="FILE",
        help="beam: the words the LM may spell, first field per line (default: the ARPA's unigrams; "
        "needed for a KenLM binary)",
    )
    group.add_argument(
        "--lm-weight", type=float, help=f"beam: weight of the LM's log-probability (default {defaults.lm_weight:g})"
    )
    group.add_argument("--word-score", type=float, help=f"beam: score added per word (default {defaults.word_score:g})")


def config_from_args(args: argparse.Namespace) -> DecoderConfig | None:
    """The DecoderConfig of parsed options (None when there is no --decoder and no default);
    UsageError naming the option that does not fit."""
    beam_only = {
        "--beam-size": args.beam_size,
        "--beam-threshold": args.beam_threshold,
        "--lm": args.lm,
        "--lexicon": args.lexicon,
        "--lm-weight": args.lm_weight,
        "--word-score": args.word_score,
    }
    given = [name for name, value in beam_only.items() if value is not None]
    if args.decoder != "beam":
        if given:
            but = f"not of --decoder {args.decoder}" if args.decoder else "add --decoder beam"
            raise exit_status.UsageError(f"{given[0]} is an option of --decoder beam ({but})")
        return None if args.decoder is None else DecoderConfig(args.decoder)
    defaults = BeamOptions()
    options = BeamOptions(
        beam_size=defaults.beam_size if args.beam_size is None else args.beam_size,
        beam_threshold=defaults.beam_threshold if args.beam_threshold is None else args.beam_threshold,
        lm_weight=defaults.lm_weight if args.lm_weight is None else args.lm_weight,
        word_score=defaults.word_score if args.word_score is None else args.word_score,
    )
    check_beam_options(options)
    if args.lm is None:
        for name in ("--lexicon", "--lm-weight", "--word-score"):
            if beam_only[name] is not None:
                raise exit_status.UsageError(f"{name} needs --lm FILE")
    return DecoderConfig("beam", options, args.lm, args.lexicon)


def check_beam_options(options: BeamOptions) -> None:
    """UsageError naming the option for a beam size below 1 or a non-positive or non-finite number."""
    if options.beam_size < 1:
        raise exit_status.UsageError(f"--beam-size {options.beam_size}: must be at least 1")
    if not (math.isfinite(options.beam_threshold) and options.beam_threshold > 0):
        raise exit_status.UsageError(f"--beam-threshold {options.beam_threshold}: must be a positive number")
    for name, value in (("--lm-weight", options.lm_weight), ("--word-score", options.word_score)):
        if not math.isfinite(value):
            raise exit_status.UsageError(f"{name} {value}: must be a finite number")


def make_decoder(config: DecoderConfig) -> Decoder:
    """The decoder of a config, its LM loaded (LanguageModelError naming the file; a warning line on
    stderr for each thing KenLM said about it)."""
    if config.kind == "greedy":
        return GreedyDecoder()
    lm = None
    if config.lm is not None:
        lm = load_language_model(config.lm, config.lexicon)
        for warning in lm.warnings:
            print(f"warning: {config.lm}: KenLM: {warning}", file=sys.stderr)
        if lm.unspellable:
            print(
                f"note: {config.lexicon or config.lm}: {lm.unspellable:,} words the labels cannot spell are left out",
                file=sys.stderr,
            )
    return BeamDecoder(config.beam, lm)
