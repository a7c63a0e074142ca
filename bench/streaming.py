"""Streaming transcription on this CPU: real-time factor, per-chunk compute and the latency from the
end of a word to its appearance in the partial transcript (pytorch.streaming).

    python -m bench.streaming --checkpoint best.pt --data-dir DIR [--split val] [--utterances 20]
    python -m bench.streaming --random          # demo-sized random weights: RTF and compute only

Each utterance's audio is read whole and fed in chunks of each --chunk-ms, as if it arrived in real
time (the chunk's audio is there at its end). Per chunk size:
  - real-time factor: compute time of all feeds and the finish / audio time;
  - per-chunk compute p50 / p99 (ms): one feed() call each (the finish counts as one);
  - end-of-word-to-text latency p50 / p99 (ms): a word appears at the end of the chunk after whose
    feed() the partial transcript holds the whole word, plus that feed's compute time; its end is
    where the CTC forced alignment (pytorch.align) of the OFFLINE transcript puts it. So latency =
    the model's lookahead (the convolutions see 15 input frames past an output frame's centre) +
    the wait for the chunk to end + compute + however late CTC emits the word's last letter.
The streamed transcript is checked against the offline one on the way (it must be equal).
Goals (issue 19): RTF <= 0.1 and latency p99 <= 300 ms at 100-200 ms chunks; the table gives each
figure's ratio to its goal. Latency means something only for a trained model: --random prints none.
Exit status: 0 done, 1 an unusable checkpoint, dataset or audio file, 2 bad usage.
"""

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import exit_status
import params
from data import labels
from pytorch import align, inference, loader, transcribe
from pytorch.decode import ErrorCounts
from pytorch.model import DeepSpeech2
from pytorch.streaming import Streamer, check_streamable, chunk_samples_of, chunks

RTF_GOAL, LATENCY_GOAL_MS = 0.1, 300.0
GOAL_CHUNKS_MS = (100, 200)
DEMO_UNIDIRECTIONAL = {"preset": "demo", "bidirectional": False, "normalization": "global"}


@dataclass
class Utterance:
    path: Path
    reference: str  # the manifest's transcript ('' for --random audio)
    waveform: torch.Tensor  # (S,)
    offline: str  # the offline greedy transcript
    word_ends: list[tuple[int, float]] = field(default_factory=list)  # (end character in `offline`, end s)


@dataclass
class Figures:
    chunk_ms: float
    audio_s: float = 0.0
    compute_s: float = 0.0
    chunk_ms_compute: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    mismatches: int = 0


def word_ends(text: str, log_probs: torch.Tensor, p: params.Params, audio_s: float) -> list[tuple[int, float]]:
    """(the character one past each word in text, the word's end in seconds by forced alignment)."""
    if not text.strip():
        return []
    alignment = align.force_align(log_probs, labels.encode(text))
    times = align.word_times(alignment, text, align.FrameClock.of(p), audio_s)
    ends, position = [], 0
    for word in times:
        position = text.index(word.word, position) + len(word.word)
        ends.append((position, word.end))
    return ends


def load_utterances(model, p: params.Params, rows: list[tuple[Path, str]]) -> list[Utterance]:
    """Each file's audio, offline transcript and word ends (the model's own offline path)."""
    utterances = []
    for path, reference in rows:
        waveform = transcribe.read_audio(path, p.sample_rate)
        features = transcribe.features_of(path, p, model.feature_stats())
        log_probs = transcribe.log_probs_of(model, features, "cpu")
        text = transcribe.transcribe(model, features, "cpu")
        ends = word_ends(text, log_probs, p, waveform.shape[0] / p.sample_rate) if reference else []
        utterances.append(Utterance(path, reference, waveform, text, ends))
    return utterances


def stream_one(model, p: params.Params, utterance: Utterance, chunk_samples: int, figures: Figures) -> None:
    """Stream one utterance, adding its compute times and word latencies to `figures`."""
    streamer, pending = Streamer(model, p), list(utterance.word_ends)
    pieces = [*chunks(utterance.waveform, chunk_samples), None]  # None: the finish
    for piece in pieces:
        started = time.perf_counter()
        text = streamer.finish() if piece is None else streamer.feed(piece)
        spent = time.perf_counter() - started
        figures.compute_s += spent
        figures.chunk_ms_compute.append(1000 * spent)
        arrived = streamer.samples_in / p.sample_rate  # the chunk's end (the finish: the audio's end)
        while pending and len(text) >= pending[0][0]:
            figures.latencies_ms.append(1000 * (arrived + spent - pending.pop(0)[1]))
    figures.audio_s += utterance.waveform.shape[0] / p.sample_rate
    figures.mismatches += text != utterance.offline


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def table(all_figures: list[Figures], with_latency: bool) -> str:
    head = f"{'chunk ms':>8} {'RTF':>7} {'x goal':>6} {'chunk p50 ms':>12} {'chunk p99 ms':>12}"
    if with_latency:
        head += f" {'words':>6} {'lat p50 ms':>10} {'lat p99 ms':>10} {'x goal':>6}"
    lines = [head + f" {'streamed != offline':>19}"]
    for f in all_figures:
        rtf = f.compute_s / f.audio_s
        line = f"{f.chunk_ms:>8g} {rtf:>7.4f} {rtf / RTF_GOAL:>6.2f} "
        line += f"{percentile(f.chunk_ms_compute, 50):>12.2f} {percentile(f.chunk_ms_compute, 99):>12.2f}"
        if with_latency:
            p99 = percentile(f.latencies_ms, 99)
            line += f" {len(f.latencies_ms):>6} {percentile(f.latencies_ms, 50):>10.0f} {p99:>10.0f}"
            line += f" {p99 / LATENCY_GOAL_MS:>6.2f}"
        lines.append(line + f" {f.mismatches:>19}")
    return "\n".join(lines)


def manifest_rows(data_dir: Path, split: str, count: int) -> list[tuple[Path, str]]:
    """`count` utterances spread evenly over the split's duration order: (audio path, transcript)."""
    rows = loader.read_manifest(loader.manifest_path(data_dir, split))
    picks = np.unique(np.linspace(0, len(rows) - 1, min(count, len(rows))).round().astype(int))
    return [(data_dir / rows[i]["audio"], rows[i]["transcript"]) for i in picks]


def random_model() -> tuple[DeepSpeech2, params.Params]:
    """The demo-sized unidirectional global model with random weights (unit feature statistics)."""
    p = params.make(DEMO_UNIDIRECTIONAL)
    torch.manual_seed(0)
    return DeepSpeech2(p).eval(), p


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m bench.streaming",
        description="Streaming transcription: real-time factor, per-chunk compute p50/p99 and end-of-word-"
        "to-text latency p50/p99 at several chunk sizes, against the goals RTF <= 0.1 and latency p99 <= 300 ms.",
        epilog="Exit status: 0 done, 1 an unusable checkpoint, dataset or audio file, 2 bad usage.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a unidirectional normalization=global .pt from training")
    source.add_argument(
        "--random", action="store_true", help="demo-sized random weights (preset=demo bidirectional=False): no latency"
    )
    parser.add_argument("--data-dir", type=Path, help="a prepared dataset: utterances of --split are streamed")
    parser.add_argument("--split", default="val", help="manifest to take utterances from (default %(default)s)")
    parser.add_argument("--utterances", type=int, default=20, help="utterances streamed (default %(default)s)")
    parser.add_argument("audio", nargs="*", type=Path, help="audio files to stream instead of --data-dir's")
    parser.add_argument(
        "--chunk-ms",
        default="10,50,100,200,400",
        help="comma-separated chunk sizes in ms (default %(default)s; 10 = one frame)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads: one stream, one core (default 1)")
    args = parser.parse_args(argv)
    try:
        args.chunk_ms = [float(x) for x in args.chunk_ms.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--chunk-ms {args.chunk_ms}: comma-separated numbers")
    if args.utterances < 1 or args.threads < 1 or not args.chunk_ms:
        parser.error("--utterances and --threads must be at least 1 and --chunk-ms name a size")
    if bool(args.data_dir) == bool(args.audio):
        parser.error("give --data-dir DIR or AUDIO files (one of the two)")
    return args


def run(args) -> None:
    torch.set_num_threads(args.threads)
    model, p = random_model() if args.random else inference.load_model(args.checkpoint, "cpu", "fp32")
    check_streamable(model, p)
    rows = manifest_rows(args.data_dir, args.split, args.utterances) if args.data_dir else [(a, "") for a in args.audio]
    if args.random:
        rows = [(path, "") for path, _ in rows]  # no word times: a random model's alignment means nothing
    utterances = load_utterances(model, p, rows)
    counts = ErrorCounts()
    for u in utterances:
        if u.reference:
            counts.add(u.reference, u.offline)
    all_figures = []
    for chunk_ms in args.chunk_ms:
        figures = Figures(chunk_ms)
        for utterance in utterances:
            stream_one(model, p, utterance, chunk_samples_of(chunk_ms, p), figures)
        all_figures.append(figures)
    source = "random weights" if args.random else str(args.checkpoint)
    audio_s = all_figures[0].audio_s
    print(f"model: {source} ({sum(t.numel() for t in model.parameters()):,} parameters, preset={p.preset or '-'})")
    print(f"utterances: {len(utterances)}, {audio_s:.1f} s of audio; torch threads {args.threads}")
    if counts.words:
        print(f"offline WER of these utterances: {counts.wer:.1f}%")
    print(table(all_figures, with_latency=not args.random))
    for f in all_figures:
        if f.chunk_ms in GOAL_CHUNKS_MS:
            rtf, p99 = f.compute_s / f.audio_s, percentile(f.latencies_ms, 99)
            verdict = f"chunk {f.chunk_ms:g} ms: RTF {rtf:.4f} {'meets' if rtf <= RTF_GOAL else 'misses'} <= {RTF_GOAL}"
            if not args.random:
                met = "meets" if p99 <= LATENCY_GOAL_MS else f"misses by {p99 - LATENCY_GOAL_MS:.0f} ms"
                verdict += f"; latency p99 {p99:.0f} ms {met} (<= {LATENCY_GOAL_MS:.0f})"
            print(verdict)


def main(argv=None) -> int:
    args = parse_args(argv)
    return exit_status.run(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
