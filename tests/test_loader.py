import gc
import json
import pickle
import re

import numpy as np
import pytest
import torch

import params
from data import dataset_dir, labels
from data.dataset_dir import DatasetError, FeatureConfigError, ManifestError
from pytorch import loader
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


def _row(i: int, **changes) -> dict:
    return (
        dataset_dir.make_row(
            f"1-2-{i:04d}",
            "dev",
            0.5 + i / 100,
            40 + i,
            "A CAT",
            f"LibriSpeech/dev/1/2/1-2-{i:04d}.flac",
            f"features/dev/1-{i % 3}.npy",
            7 * i,
        )
        | changes
    )


# Lines that row_line does not write (other key order, escapes, an extra key, an integer duration):
# Manifest.read parses them one by one, the rest in bulk; both must give the rows json.loads gives.
ODD_LINES = [
    '{"offset": 3, "id": "1-2-9000", "subset": "dev", "duration": 1, "frames": 5, "transcript": "A\\u0020B",'
    ' "audio": "LibriSpeech/dev/x.flac", "features": "features/dev/a..b.npy", "extra": [1]}',
    '{"id":"1-2-9001","subset":"dev","duration":2.5e0,"frames":1,"transcript":"\\"Q\\"",'
    '"audio":"a/b.flac","features":"features/dev/1-0.npy","offset":0}',
]


@pytest.mark.parametrize("chunk", [1 << 20, 300])
def test_manifest_read_gives_the_rows_json_gives(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(dataset_dir, "_READ_CHUNK", chunk)  # 300: many chunks, some all canonical, some not
    lines = [dataset_dir.row_line(_row(i)) for i in range(40)]
    lines[3] = dataset_dir.row_line(_row(3, features="features/dev/a..b.npy"))  # flagged in bulk, then accepted
    lines[25:25] = [line + "\n" for line in ODD_LINES]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(lines).rstrip("\n"))  # the last line without its newline
    manifest = Manifest.read(path)
    expected = [json.loads(line) for line in lines]
    assert len(manifest) == len(expected)
    for i, row in enumerate(expected):
        assert manifest.row(i) == {key: row[key] for key in dataset_dir.FIELDS}
    assert manifest.duration.dtype == np.float64 and manifest.frames.dtype == manifest.offset.dtype == np.int64
    assert manifest.shards[manifest.shard[6]] == "features/dev/1-0.npy" and manifest.shard.dtype == np.int32
    assert [manifest.transcript(i) for i in (25, 26)] == ["A B", '"Q"'] and manifest.id(0) == "1-2-0000"


BAD_LINES = [
    ("{", "not JSON (Expecting property name enclosed in double quotes at column 2)"),
    ("", "not JSON (Expecting value at column 1)"),
    ("[1, 2]", "a JSON list, not an object"),
    ("duration=-0.5", "field 'duration' is -0.5: not a finite number >= 0"),
    ("duration=1e999", "field 'duration' is inf: not a finite number >= 0"),
    ("duration=NaN", "field 'duration' is nan: not a finite number >= 0"),
    ("frames=0", "field 'frames' is 0: not at least 1"),
    ("offset=-1", "field 'offset' is -1: negative"),
    ("id=", "field 'id' is empty"),
    ("features=../../etc/passwd", "field 'features' is '../../etc/passwd': not a relative path inside"),
    ("audio=/etc/passwd", "field 'audio' is '/etc/passwd': not a relative path inside"),
    ("transcript=7", "field 'transcript' is int '7', not str"),
]


@pytest.mark.parametrize("chunk", [1 << 20, 300])
@pytest.mark.parametrize("bad, problem", BAD_LINES)
def test_a_bad_row_gets_the_same_words_from_the_loader_and_from_verify(tmp_path, monkeypatch, chunk, bad, problem):
    """Manifest.read (bulk or line by line) raises what parse_row (verify's) says, naming file and line."""
    monkeypatch.setattr(dataset_dir, "_READ_CHUNK", chunk)
    if "=" in bad:
        key, value = bad.split("=", 1)
        number = value if key in ("duration", "frames", "offset") else json.dumps(value)
        if key == "transcript":
            number = value
        bad = (
            dataset_dir.row_line(_row(5)).strip().replace(f'"{key}": {json.dumps(_row(5)[key])}', f'"{key}": {number}')
        )
    with pytest.raises(dataset_dir.RowError) as verify_says:
        dataset_dir.parse_row(bad.encode())
    assert str(verify_says.value).startswith(problem)
    lines = [dataset_dir.row_line(_row(i)) for i in range(20)]
    lines[12] = bad + "\n"
    (tmp_path / "m.jsonl").write_text("".join(lines))
    with pytest.raises(ManifestError) as loader_says:
        Manifest.read(tmp_path / "m.jsonl")
    assert str(loader_says.value) == f"{tmp_path / 'm.jsonl'}:13: {verify_says.value}"


def test_manifest_select_keeps_the_order_given():
    manifest = Manifest.from_rows([_row(i) for i in range(10)])
    assert [manifest.select([7, 2, 2, 0]).row(k) for k in range(4)] == [_row(i) for i in (7, 2, 2, 0)]
    short = manifest.select(np.flatnonzero(manifest.duration <= 0.535))
    assert [short.row(k) for k in range(len(short))] == [_row(i) for i in range(4)]
    assert len(manifest.select([])) == 0
    with pytest.raises(ManifestError, match=r"rows\[1\]: field 'frames' is 0"):
        Manifest.from_rows([_row(0), _row(1, frames=0)])


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
        path.write_text("".join(dataset_dir.row_line(_row(i)) for i in range(n)))
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
    out = loader.normalise(frames)
    assert torch.allclose(out.mean(), torch.tensor(0.0), atol=1e-5)
    assert torch.allclose(out.std(), torch.tensor(1.0), atol=1e-5)
    silent = loader.normalise(torch.full((81, 50), 0.25))
    assert torch.equal(silent, torch.zeros(81, 50))
