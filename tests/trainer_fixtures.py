"""A tiny PREPARED dataset for the trainer tests, written directly (no audio, no feature extraction).

Each character of a transcript is a fixed random spectral pattern held for FRAMES_PER_CHAR frames,
plus a little noise, so a tiny model can learn to read the transcripts back.
"""

import json
from pathlib import Path

import numpy as np

import params

FRAMES_PER_CHAR = 8
EDGE_FRAMES = 16  # silence before and after: the convolutions eat about 30 frames
TRAIN_TRANSCRIPTS = ("A", "B", "AB", "BA", "ABA", "BAB", "AAB", "ABB", "B A", "A B", "BA B", "AB A")
VAL_TRANSCRIPTS = ("AB", "BA", "A B", "ABA")


def utterance_frames(transcript: str, n_features: int, rng: np.random.Generator) -> np.ndarray:
    """(T, F) float32: one pattern per character (the same for every utterance), plus noise."""
    patterns = np.random.default_rng(1234).standard_normal((128, n_features)).astype(np.float32) * 2.0
    silence = np.zeros((EDGE_FRAMES, n_features), np.float32)
    chars = [np.repeat(patterns[ord(c)][None], FRAMES_PER_CHAR, axis=0) for c in transcript]
    frames = np.concatenate([silence, *chars, silence])
    return frames + 0.1 * rng.standard_normal(frames.shape).astype(np.float32)


def write_split(data_dir: Path, split: str, subset: str, transcripts, copies: int, p: params.Params, rng) -> list[dict]:
    """One shard features/<subset>/100-<k>.npy and manifests/<split>.jsonl, ascending duration."""
    rows, frames = [], []
    offset = 0
    for n in range(copies * len(transcripts)):
        transcript = transcripts[n % len(transcripts)]
        utt = utterance_frames(transcript, p.n_features, rng)
        rows.append(
            {
                "id": f"100-{len(split)}-{n:04d}",
                "subset": subset,
                "duration": round((len(utt) - 1) * p.hop_length / p.sample_rate, 3),
                "frames": len(utt),
                "transcript": transcript,
                "audio": f"LibriSpeech/{subset}/100/{len(split)}/100-{len(split)}-{n:04d}.flac",
                "features": f"features/{subset}/100-{len(split)}.npy",
                "offset": offset,
            }
        )
        frames.append(utt)
        offset += len(utt)
    shard = data_dir / "features" / subset / f"100-{len(split)}.npy"
    shard.parent.mkdir(parents=True, exist_ok=True)
    np.save(shard, np.concatenate(frames).astype(np.float16))
    rows.sort(key=lambda r: (r["duration"], r["id"]))
    manifest = data_dir / "manifests" / f"{split}.jsonl"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def write_dataset(
    data_dir: Path, p: params.Params | None = None, train_copies: int = 2, val_copies: int = 1, seed: int = 0
) -> Path:
    """data_dir with features/features.json, train and val manifests and their shards."""
    p = p or params.make({"preset": "tiny"})
    data_dir = Path(data_dir)
    rng = np.random.default_rng(seed)
    write_split(data_dir, "train", "train-clean-100", TRAIN_TRANSCRIPTS, train_copies, p, rng)
    write_split(data_dir, "val", "dev-clean", VAL_TRANSCRIPTS, val_copies, p, rng)
    (data_dir / "features" / "features.json").write_text(json.dumps(p.feature_config()))
    return data_dir


# The learning test's corpus: sentences of 1-3 words from a small vocabulary, in 8 letters and space.
WORDS = ("A", "BAD", "CAB", "DEAF", "FACE", "BEG", "HEAD", "GAG", "ACHE", "FED")


def sentences(count: int, rng: np.random.Generator) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=rng.integers(1, 4))) for _ in range(count)]


def write_learning_dataset(data_dir: Path, p: params.Params, train: int = 160, val: int = 40, seed: int = 0) -> Path:
    """A corpus a small model learns to read in seconds, with enough validation words (about 80) that
    its WER moves in steps of about one point, not forty: `train` and `val` random sentences of WORDS."""
    data_dir = Path(data_dir)
    rng = np.random.default_rng(seed)
    write_split(data_dir, "train", "train-clean-100", sentences(train, rng), 1, p, rng)
    write_split(data_dir, "val", "dev-clean", sentences(val, rng), 1, p, rng)
    (data_dir / "features" / "features.json").write_text(json.dumps(p.feature_config()))
    return data_dir


def add_row(data_dir: Path, split: str, row: dict) -> None:
    """Append one row to manifests/<split>.jsonl, keeping it sorted by (duration, id)."""
    path = Path(data_dir) / "manifests" / f"{split}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] + [row]
    rows.sort(key=lambda r: (r["duration"], r["id"]))
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
