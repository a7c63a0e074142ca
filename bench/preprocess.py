"""Preprocessing throughput: audio-seconds per CPU-second of this pipeline vs the 2018 reference's approach.

Three ways over the same LibriSpeech-format corpus of espeak-ng speech (synthetic.corpus, as the
demo's; needs espeak-ng), each in this one process (torch and BLAS at 1 thread) so that CPU time
compares per core (one process by design: --jobs N of data.prepare scales it by N cores):
  ours       data.prepare.process_chapter: FLAC decode + extract() + float16 shard write (+ sha256)
  reference  what the 2018 reference did: one `sox` process per file (flac -> wav), then a librosa
             STFT per utterance (librosa warmed up first so numba compilation is not counted).
             Without sox: soundfile decode instead, and a `ref+spawn` row adding one `true` process
             per file, a lower bound of what sox's process start-up alone costs
  bound      soundfile decode + torch.stft (complex, no magnitude) alone: what any pipeline must pay
CPU time = this process + its children (sox), from os.times(). Goals: ours/reference >= 5x,
ours/bound >= 70%.
"""

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

import params
from data.prepare import ChapterTask, find_chapters, process_chapter
from synthetic import corpus

SUBSET = "dev-clean"


def cpu_seconds() -> float:
    """CPU time of this process (fine-grained) plus its reaped children (sox)."""
    t = os.times()
    return time.process_time() + t.children_user + t.children_system


def make_corpus(root: Path, utterances: int, seed: int) -> None:
    """Write `utterances` of espeak-ng speech (the demo's synthetic corpus: realistic input, unlike
    tones or noise) under root/LibriSpeech/dev-clean."""
    for archive in corpus.synthesize(root / "archives", {SUBSET: utterances}, seed, jobs=os.cpu_count() or 1):
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")


def measure(methods: dict, repeats: int) -> dict[str, dict]:
    """Run each {name: work() -> audio seconds} `repeats` times, interleaved so that every method
    sees the same load on a shared machine; keep each method's run with the least CPU time."""
    runs = {name: [] for name in methods}
    for _ in range(repeats):
        for name, work in methods.items():
            cpu0, wall0 = cpu_seconds(), time.perf_counter()
            audio = work()
            runs[name].append((cpu_seconds() - cpu0, time.perf_counter() - wall0, audio))
    results = {}
    for name, timings in runs.items():
        cpu, wall, audio = min(timings)
        results[name] = {
            "name": name,
            "audio": audio,
            "cpu": cpu,
            "wall": wall,
            "per_cpu": audio / cpu,
            "per_wall": audio / wall,
        }
    return results


def run_ours(root: Path, p: params.Params) -> float:
    tasks = [ChapterTask(str(root), chapter, p) for chapter in find_chapters(root, SUBSET)]
    return sum(process_chapter(task).audio_seconds for task in tasks)


def run_bound(flacs: list[Path], p: params.Params) -> float:
    window = torch.hamming_window(p.n_fft, periodic=True)
    seconds = 0.0
    for flac in flacs:
        audio, rate = sf.read(flac, dtype="float32")
        torch.stft(
            torch.from_numpy(audio),
            p.n_fft,
            p.hop_length,
            p.n_fft,
            window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        seconds += len(audio) / rate
    return seconds


def warm_reference(p: params.Params) -> None:
    """Import librosa and compile its numba paths outside the measurement (once per environment: ~20 s)."""
    import librosa  # here: only the reference measurement needs it

    librosa.stft(
        np.zeros(16000, np.float32), n_fft=p.n_fft, hop_length=p.hop_length, win_length=p.n_fft, window="hamming"
    )


def run_reference(
    flacs: list[Path], p: params.Params, scratch: Path, sox: str | None, spawn: str | None = None
) -> float:
    """sox flac -> wav per file (or, without sox, soundfile decode plus an optional `spawn`
    process per file as a lower bound of sox's start-up), then a librosa STFT per utterance."""
    import librosa  # already imported by warm_reference

    seconds = 0.0
    wav = scratch / "utterance.wav"
    for flac in flacs:
        if sox:
            subprocess.run([sox, str(flac), str(wav)], check=True)
            audio, rate = sf.read(wav, dtype="float32")
        else:
            if spawn:
                subprocess.run([spawn], check=True)
            audio, rate = sf.read(flac, dtype="float32")
        spect = librosa.stft(audio, n_fft=p.n_fft, hop_length=p.hop_length, win_length=p.n_fft, window="hamming")
        np.log1p(np.abs(spect))
        seconds += len(audio) / rate
    return seconds


def report(results: dict[str, dict], sox: bool) -> None:
    print(f"{'method':<11}{'audio s':>9}{'CPU s':>8}{'wall s':>8}{'audio-s/CPU-s':>15}{'audio-s/wall-s':>16}")
    for r in results.values():
        print(
            f"{r['name']:<11}{r['audio']:>9.1f}{r['cpu']:>8.2f}{r['wall']:>8.2f}{r['per_cpu']:>15.0f}{r['per_wall']:>16.0f}"
        )
    ours = results["ours"]["per_cpu"]
    vs_ref = ours / results["reference"]["per_cpu"]
    vs_bound = ours / results["bound"]["per_cpu"]
    note = "" if sox else "  (reference measured WITHOUT its sox step: sox missing, `apt-get install sox`)"
    print(f"ours / reference: {vs_ref:.1f}x (goal >= 5x: {'met' if vs_ref >= 5 else 'NOT met'}){note}")
    if "ref+spawn" in results:
        vs_spawn = ours / results["ref+spawn"]["per_cpu"]
        print(
            f"ours / ref+spawn: {vs_spawn:.1f}x "
            "(reference + one `true` process per file: a lower bound of its sox cost)"
        )
    print(f"ours / bound:     {100 * vs_bound:.0f}% (goal >= 70%: {'met' if vs_bound >= 0.7 else 'NOT met'})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.preprocess", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--utterances", type=int, default=200, help="utterances in the corpus (default %(default)s)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per method, least CPU time kept (default %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="feature parameters (params.py)")
    args = parser.parse_args(argv)
    if args.utterances < 1 or args.repeats < 1:
        parser.error("need --utterances >= 1 and --repeats >= 1")
    if importlib.util.find_spec("librosa") is None:  # a test-only dependency: not in the runtime image
        parser.error("the reference measurement needs librosa: pip install -r requirements-test.txt")
    p = params.parse(args.overrides)
    torch.set_num_threads(1)
    sox = shutil.which("sox")
    if not sox:
        print(
            "note: sox not found (apt-get install sox); the reference is measured without its flac->wav step",
            file=sys.stderr,
        )
    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as tmp:
        root = Path(tmp)
        make_corpus(root, args.utterances, args.seed)
        flacs = sorted((root / "LibriSpeech" / SUBSET).rglob("*.flac"))
        print(f"corpus: {len(flacs)} utterances of espeak-ng speech; features {p.feature_config()}")
        run_bound(flacs[:2], p)  # page cache and torch first-call costs, for every method alike
        warm_reference(p)
        methods = {
            "bound": lambda: run_bound(flacs, p),
            "ours": lambda: run_ours(root, p),
            "reference": lambda: run_reference(flacs, p, root, sox),
        }
        if not sox and shutil.which("true"):
            methods["ref+spawn"] = lambda: run_reference(flacs, p, root, None, shutil.which("true"))
        results = measure(methods, args.repeats)
    report(results, bool(sox))
    return 0


if __name__ == "__main__":
    sys.exit(main())
