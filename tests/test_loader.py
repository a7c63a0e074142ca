import gc
import json
import pickle
import re

import numpy as np
import pytest
import torch

import params
from data import labels
from data.dataset_dir import DatasetError, FeatureConfigError
from data.manifest import ManifestError, row_line
from data.normalization import normalise
from pytorch.loader import (
    Batch,
    LoaderError,
    Manifest,
    Utterance,
    UtteranceDataset,
    check_features,
    collate,
    global_batches,
    make_loader,
    manifest_path,
    micro_batches,
    open_split,
    read_manifest,
)
from pytorch.model import output_lengths
from tests.corpus import manifest_row as _row

P = params.make({"window_size": 0.01})  # 81 bins
TRANSCRIPTS = ["A CAT", "DOG'S DAY", "HI", "THE END OF IT"]
FRAMES = [40, 55, 33, 70]


@pytest.fixture
def data_dir(tmp_path):
    """Two chapter shards holding four utterances, their manifest and feature config."""
    rng = np.random.default_rng(0)
    (tmp_path / "features" / "dev").mkdir(parents=True)
    (tmp_path / "manifests").mkdir()
    rows, shards = [], {"1-2": [], "3-4": []}
    for i, (text, frames) in enumerate(zip(TRANSCRIPTS, FRAMES)):
        chapter = "1-2" if i < 2 else "3-4"
        offset = sum(len(s) for s in shards[chapter])
        shards[chapter].append(rng.normal(2.0, 3.0, (frames, P.n_features)).astype(np.float16))
        rows.append(
            dict(
                id=f"{chapter}-{i:04d}",
                subset="dev",
                duration=frames / 100,
                frames=frames,
                transcript=text,
                audio=f"LibriSpeech/dev/{chapter}-{i:04d}.flac",
                features=f"features/dev/{chapter}.npy",
                offset=offset,
            )
        )
    for chapter, parts in shards.items():
        np.save(tmp_path / "features" / "dev" / f"{chapter}.npy", np.concatenate(parts))
    (tmp_path / "features" / "features.json").write_text(json.dumps(P.feature_config()))
    (tmp_path / "manifests" / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_read_manifest(data_dir):
    rows = read_manifest(manifest_path(data_dir, "val"))
    assert [r["transcript"] for r in rows] == TRANSCRIPTS
    assert rows[3]["offset"] == FRAMES[2]


def test_manifest_path_missing_suggests_download(data_dir):
    with pytest.raises(DatasetError, match=r"train\.jsonl.*download_dataset\.sh"):
        manifest_path(data_dir, "train")


@pytest.mark.parametrize(
    "bad, message",
    [
        ("not json", "not JSON"),
        ("[1, 2]", "a JSON list, not an object"),
        ('{"id": "x"}', "missing field 'subset'"),
        ("frames=1.5", "field 'frames' is float '1.5', not int"),
        ("offset=-3", "field 'offset' is -3: negative"),
        ("duration=true", "field 'duration' is bool 'True'"),
    ],
)
def test_read_manifest_bad_row_names_file_and_line(data_dir, bad, message):
    path = data_dir / "manifests" / "val.jsonl"
    lines = path.read_text().splitlines()
    if "=" in bad:
        key, value = bad.split("=")
        row = json.loads(lines[1]) | {key: json.loads(value)}
        bad = json.dumps(row)
    lines[1] = bad
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match=f"val.jsonl:2: {re.escape(message)}"):
        read_manifest(path)


def test_check_features(data_dir):
    check_features(data_dir, P)
    with pytest.raises(FeatureConfigError, match=r"n_features: data 81 vs params 161.*window_size"):
        check_features(data_dir, params.make({}))
    (data_dir / "features" / "features.json").unlink()
    with pytest.raises(DatasetError, match="download_dataset.sh"):
        check_features(data_dir, P)


def _objects_reachable(root) -> int:
    """Python objects reachable from root (what forked DataLoader workers would copy by reading them)."""
    seen, todo = set(), [root]
    while todo:
        obj = todo.pop()
        if id(obj) not in seen:
            seen.add(id(obj))
            todo.extend(gc.get_referents(obj))
    return len(seen)


def test_manifest_and_dataset_hold_no_python_object_per_row(tmp_path):
    """Rows and transcripts live in flat arrays: 20 or 2,000 rows, the same number of Python objects."""
    counts = []
    for n in (20, 2000):
        path = tmp_path / f"{n}.jsonl"
        path.write_text("".join(row_line(_row(i)) for i in range(n)))
        dataset = UtteranceDataset(tmp_path, Manifest.read(path))
        counts.append(_objects_reachable(dataset))
    assert counts[0] == counts[1]


def test_open_split_filters_by_duration_keeping_the_order(data_dir):
    assert [int(f) for f in open_split(data_dir, "val", max_duration=0.5).manifest.frames] == [40, 33]
    assert len(open_split(data_dir, "val")) == 4
    with pytest.raises(LoaderError, match=r"val\.jsonl: no utterances of at most max_duration=0\.1 s"):
        open_split(data_dir, "val", max_duration=0.1)


def dataset_of(data_dir, rows=None) -> UtteranceDataset:
    manifest = Manifest.from_rows(rows) if rows is not None else Manifest.read(manifest_path(data_dir, "val"))
    return UtteranceDataset(data_dir, manifest)


def test_dataset_item_is_normalised_slice(data_dir):
    dataset = dataset_of(data_dir)
    item = dataset[(3, None)]
    raw = np.load(data_dir / "features" / "dev" / "3-4.npy")[FRAMES[2] : FRAMES[2] + FRAMES[3]].astype(np.float32).T
    expected = (raw - raw.mean()) / raw.std(ddof=1)
    assert item.features.dtype == torch.float32 and item.features.shape == (P.n_features, FRAMES[3])
    assert np.allclose(item.features.numpy(), expected, atol=1e-4)
    assert item.labels.tolist() == labels.encode(TRANSCRIPTS[3]) and item.labels.dtype == torch.long
    assert (item.id, item.transcript) == ("3-4-0003", TRANSCRIPTS[3])


def test_dataset_pickles_without_open_shards(data_dir):
    dataset = dataset_of(data_dir)
    dataset[(0, None)]
    copy = pickle.loads(pickle.dumps(dataset))
    assert len(copy._shards) == 0 and len(dataset._shards) == 1
    assert torch.equal(copy[(0, None)].features, dataset[(0, None)].features)


def test_dataset_errors_name_utterance(data_dir):
    rows = read_manifest(manifest_path(data_dir, "val"))
    with pytest.raises(LoaderError, match="utterance 1-2-0000: character '#'"):
        dataset_of(data_dir, [rows[0] | {"transcript": "A # B"}])
    dataset = dataset_of(data_dir, [rows[1] | {"frames": 500}])
    with pytest.raises(LoaderError, match=r"utterance 1-2-0001: frames \[40, 540\) not in .*1-2.npy"):
        dataset[(0, None)]
    dataset = dataset_of(data_dir, [rows[1] | {"features": "features/dev/none.npy"}])
    with pytest.raises(LoaderError, match="none.npy: cannot read"):
        dataset[(0, None)]


def test_global_batches_in_order():
    assert global_batches(7, 3, shuffle=False, seed=1, epoch=0) == [[0, 1, 2], [3, 4, 5], [6]]
    assert global_batches(0, 3, shuffle=False, seed=1, epoch=0) == []


def test_global_batches_shuffle_permutes_whole_batches():
    plain = global_batches(100, 4, shuffle=False, seed=1, epoch=0)
    first = global_batches(100, 4, shuffle=True, seed=1, epoch=0)
    assert sorted(first) == plain and first != plain
    assert first == global_batches(100, 4, shuffle=True, seed=1, epoch=0)
    assert first != global_batches(100, 4, shuffle=True, seed=1, epoch=1)
    assert first != global_batches(100, 4, shuffle=True, seed=2, epoch=0)


@pytest.mark.parametrize("size", [0, 1, 5, 8, 13])
@pytest.mark.parametrize("world, accum", [(1, 1), (2, 1), (1, 2), (3, 2), (2, 3)])
def test_micro_batches_cover_global_batch_once(size, world, accum):
    batch = list(range(100, 100 + size))
    per_rank = [micro_batches(batch, world, accum, rank) for rank in range(world)]
    assert all(len(steps) == accum for steps in per_rank)
    parts = [per_rank[m % world][m // world] for m in range(world * accum)]
    assert [i for part in parts for i in part] == batch  # contiguous, fixed order, nothing lost or doubled
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_micro_batches_same_for_world_and_accumulation():
    batch = list(range(7))
    accumulated = micro_batches(batch, world_size=1, accumulation_steps=2, rank=0)
    distributed = [micro_batches(batch, world_size=2, accumulation_steps=1, rank=r)[0] for r in range(2)]
    assert accumulated == distributed == [[0, 1, 2, 3], [4, 5, 6]]


def test_micro_batches_rejects_bad_rank():
    with pytest.raises(ValueError, match="rank=2"):
        micro_batches([1, 2], 2, 1, 2)


def utterance(frames: int, labels_: list[int], name: str, value: float = 1.0) -> Utterance:
    return Utterance(torch.full((3, frames), value), torch.tensor(labels_), name, name.upper())


def test_collate_pads_and_concatenates():
    batch = collate([utterance(4, [5, 6], "a"), utterance(6, [7], "b", 2.0)])
    assert batch.features.shape == (2, 3, 6) and len(batch) == 2 and batch.dropped == 0
    assert batch.features[0, :, 4:].abs().sum() == 0 and batch.features[0, :, :4].eq(1).all()
    assert batch.features[1].eq(2).all()
    assert batch.lengths.tolist() == [4, 6] and batch.targets.tolist() == [5, 6, 7]
    assert batch.target_lengths.tolist() == [2, 1]
    assert (batch.ids, batch.transcripts) == (["a", "b"], ["A", "B"])
    assert len(collate([])) == 0


def test_training_collate_leaves_out_what_ctc_cannot_align_and_counts_it():
    """40 frames give 5 output frames: 5 labels fit, 6 do not, and 5 with a repeat need 6."""
    items = [utterance(40, [1, 2, 3, 4, 5], "fits"), utterance(40, [1, 2, 3, 4, 5, 6], "long"),
             utterance(40, [1, 1, 2, 3, 4], "repeat"), utterance(20, [1], "short")]  # fmt: skip
    assert [output_lengths(torch.tensor([40]))[0].item(), output_lengths(torch.tensor([20]))[0].item()] == [5, 0]
    batch = collate(items, training=True)
    assert batch.ids == ["fits"] and batch.dropped == 3
    assert collate(items).ids == ["fits", "long", "repeat", "short"]  # evaluation decodes them all
    assert len(collate(items[1:], training=True)) == 0 and collate(items[1:], training=True).dropped == 3


def test_synthetic_batch_is_alignable_and_sized_as_asked():
    batch = Batch.synthetic(3, 81, 200, torch.Generator().manual_seed(0))
    assert batch.features.shape == (3, 81, 200) and batch.lengths.tolist() == [200] * 3
    assert len(collate([Utterance(batch.features[0], batch.targets[: batch.target_lengths[0]], "x", "")], True)) == 1


@pytest.mark.parametrize("workers", [0, 1])
def test_make_loader_follows_given_batches(data_dir, workers):
    dataset = dataset_of(data_dir)
    loader_ = make_loader(dataset, [[2, 0], [3], []], num_workers=workers, pin_memory=True)
    got = [(batch.features.shape, batch.ids) for batch in loader_]
    ids = [dataset.manifest.id(i) for i in range(len(dataset))]
    assert got[0] == ((2, P.n_features, FRAMES[0]), [ids[2], ids[0]])
    assert got[1][1] == [ids[3]] and got[2][1] == []
    loader_.batch_sampler.set([[1]], epoch=4)
    assert [batch.ids for batch in loader_] == [[ids[1]]]
    assert list(loader_.batch_sampler) == [[(1, 4)]]


def test_normalise_gives_zero_mean_unit_std_and_survives_silence():
    frames = torch.randn(81, 50) * 3 + 2
    out = normalise(frames, None)
    assert torch.allclose(out.mean(), torch.tensor(0.0), atol=1e-5)
    assert torch.allclose(out.std(), torch.tensor(1.0), atol=1e-5)
    silent = normalise(torch.full((81, 50), 0.25), None)
    assert torch.equal(silent, torch.zeros(81, 50))
