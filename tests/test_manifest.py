"""data.manifest: the row schema, its one parser (a line at a time or a file in bulk), the columnar Manifest."""

import json
import random

import numpy as np
import pytest

from data import manifest as mf
from data.manifest import FIELDS, Manifest, ManifestError, RowError, check_rows, make_row, parse_row, row_line
from tests.corpus import manifest_row as _row


def _read(tmp_path, lines: list[str]) -> Manifest:
    path = tmp_path / "m.jsonl"
    path.write_text("".join(lines))
    return Manifest.read(path)


# Lines that row_line does not write (other key order, escapes, an extra key, an integer duration,
# no spaces): json.loads decodes them, the others numpy in bulk; both must give the rows json.loads gives.
ODD_LINES = [
    '{"offset": 3, "id": "1-2-9000", "subset": "dev", "duration": 1, "frames": 5, "transcript": "A\\u0020B",'
    ' "audio": "LibriSpeech/dev/x.flac", "features": "features/dev/a..b.npy", "extra": [1]}',
    '{"id":"1-2-9001","subset":"dev","duration":2.5e0,"frames":1,"transcript":"\\"Q\\"",'
    '"audio":"a/b.flac","features":"features/dev/1-0.npy","offset":0}',
]


@pytest.mark.parametrize("chunk", [1 << 20, 300])
def test_manifest_read_gives_the_rows_json_gives(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(mf, "_READ_CHUNK", chunk)  # 300: many chunks, some all laid out as row_line does, some not
    lines = [row_line(_row(i)) for i in range(40)]
    lines[3] = row_line(_row(3, features="features/dev/a..b.npy"))  # '..' inside a name: a path inside
    lines[25:25] = [line + "\n" for line in ODD_LINES]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(lines).rstrip("\n"))  # the last line without its newline
    manifest = Manifest.read(path)
    expected = [json.loads(line) for line in lines]
    assert len(manifest) == len(expected)
    for i, row in enumerate(expected):
        assert manifest.row(i) == {key: row[key] for key in FIELDS}
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
    ("frames=012", "not JSON"),
    ("frames=99999999999999999999", "field 'frames' is 99999999999999999999: beyond the 64-bit integers"),
    ("offset=-1", "field 'offset' is -1: negative"),
    ("id=", "field 'id' is empty"),
    ("features=../../etc/passwd", "field 'features' is '../../etc/passwd': not a relative path inside"),
    ("audio=/etc/passwd", "field 'audio' is '/etc/passwd': not a relative path inside"),
    ("audio=a\\\\..\\\\b", "field 'audio' is 'a\\\\..\\\\b': not a relative path inside"),
    ("transcript=7", "field 'transcript' is int '7', not str"),
]


def _with(row: dict, key: str, text: str) -> str:
    """row_line(row) with `key`'s value written as `text` (JSON, as it stands)."""
    return row_line(row).strip().replace(f'"{key}": {json.dumps(row[key])}', f'"{key}": {text}')


@pytest.mark.parametrize("chunk", [1 << 20, 300])
@pytest.mark.parametrize("bad, problem", BAD_LINES)
def test_a_bad_row_gets_the_same_words_from_the_loader_and_from_verify(tmp_path, monkeypatch, chunk, bad, problem):
    """Manifest.read (a file, in chunks) raises what parse_row (a line) says, naming file and line."""
    monkeypatch.setattr(mf, "_READ_CHUNK", chunk)
    if "=" in bad:
        key, value = bad.split("=", 1)
        bad = _with(_row(5), key, value if key in ("duration", "frames", "offset", "transcript") else f'"{value}"')
    with pytest.raises(RowError) as verify_says:
        parse_row(bad.encode())
    assert str(verify_says.value).startswith(problem)
    lines = [row_line(_row(i)) for i in range(20)]
    lines[12] = bad + "\n"
    with pytest.raises(ManifestError) as loader_says:
        _read(tmp_path, lines)
    assert str(loader_says.value) == f"{tmp_path / 'm.jsonl'}:13: {verify_says.value}"


def test_every_bad_line_of_a_file_is_named_with_its_line(tmp_path):
    """parse_lines, as verify uses it, keeps the good rows and says what is wrong with each bad line."""
    lines = [row_line(_row(i)) for i in range(6)]
    lines[1], lines[4] = _with(_row(1), "frames", "0") + "\n", "[]\n"
    parsed = mf.parse_lines("".join(lines).encode())
    assert list(parsed.lines) == [0, 2, 3, 5] and [parsed.columns.row(k)["id"] for k in range(4)] == [
        _row(i)["id"] for i in (0, 2, 3, 5)
    ]
    assert {line: str(err) for line, err in parsed.errors.items()} == {
        1: "field 'frames' is 0: not at least 1",
        4: "a JSON list, not an object",
    }


def _random_row(rng: random.Random, i: int) -> dict:
    """A row of the kind prepare writes, with numbers at the edges of what the bulk decoder takes."""
    duration = rng.choice(
        [0, 0.0001, 1e-05, 14.845, 123456789012345, 1234567890.12345, 1234567890123456, 2.5e20, rng.random() * 40]
    )
    if rng.random() < 0.5:
        duration = round(duration, rng.randrange(6))
    big = rng.choice([0, 9, 10, 99, 10**17, 10**18 - 1, 10**18, 2**63 - 1])
    words = rng.choice(["A CAT", "", "DON'T", "X" * 300, "ÉTÉ", 'SAID "NO"', "TAB\tHERE"])
    return make_row(
        f"{rng.randrange(10**4)}-{i}", rng.choice(["dev-clean", "test-other"]), duration, max(1, big),
        words, f"LibriSpeech/dev-clean/{i}.flac", f"features/dev-clean/{i % 7}.npy", big,
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(4))
def test_rows_read_back_as_written_by_both_decoders(tmp_path, monkeypatch, seed):
    """Random rows, written by row_line (mostly decoded in bulk) and with other separators (all by
    json.loads): the same rows as json.loads makes of each line, in chunks of any size."""
    rng = random.Random(seed)
    rows = [_random_row(rng, i) for i in range(300)]
    monkeypatch.setattr(mf, "_READ_CHUNK", rng.choice([64, 1000, 1 << 20]))
    for lines in ([row_line(r) for r in rows], [json.dumps(r, separators=(",", ":")) + "\n" for r in rows]):
        manifest = _read(tmp_path, lines)
        for i, line in enumerate(lines):
            expected = json.loads(line)
            got = manifest.row(i)
            assert got == expected and type(got["frames"]) is int, (i, line)
            assert parse_row(line) == expected


def test_a_line_longer_than_the_read_buffer(tmp_path, monkeypatch):
    monkeypatch.setattr(mf, "_READ_CHUNK", 64)
    rows = [_row(0), _row(1, transcript="LONG " * 100), _row(2)]
    assert [r["transcript"] for r in (_read(tmp_path, [row_line(r) for r in rows]).row(i) for i in range(3))] == [
        r["transcript"] for r in rows
    ]


def test_an_empty_manifest_has_no_rows(tmp_path):
    manifest = _read(tmp_path, [])
    assert len(manifest) == 0 and manifest.shards == [] and len(manifest.ids) == 0


def test_subsets_and_shards_are_tables_in_order_of_first_appearance(tmp_path, monkeypatch):
    monkeypatch.setattr(mf, "_READ_CHUNK", 500)
    rows = [_row(i, subset=["b", "a"][i % 2], features=f"features/x/{(7 - i) % 4}.npy") for i in range(30)]
    manifest = _read(tmp_path, [row_line(r) for r in rows])
    assert manifest.subsets == ["b", "a"] and manifest.shards == [f"features/x/{k}.npy" for k in (3, 2, 1, 0)]
    assert manifest.subset.dtype == np.int16 and [manifest.row(i) for i in range(30)] == rows


def test_manifest_select_keeps_the_order_given():
    manifest = Manifest.from_rows([_row(i) for i in range(10)])
    assert [manifest.select([7, 2, 2, 0]).row(k) for k in range(4)] == [_row(i) for i in (7, 2, 2, 0)]
    short = manifest.select(np.flatnonzero(manifest.duration <= 0.535))
    assert [short.row(k) for k in range(len(short))] == [_row(i) for i in range(4)]
    assert len(manifest.select([])) == 0
    with pytest.raises(ManifestError, match=r"rows\[1\]: field 'frames' is 0"):
        Manifest.from_rows([_row(0), _row(1, frames=0)])


def test_rows_are_checked_before_they_are_written():
    check_rows([_row(0), _row(1)], where="dev.jsonl")
    with pytest.raises(ManifestError, match=r"dev\.jsonl\[1\]: field 'audio' is '/x': not a relative path"):
        check_rows([_row(0), _row(1, audio="/x"), _row(2, frames="9")], where="dev.jsonl")
    with pytest.raises(RowError, match="field 'frames' is str '9', not int"):
        mf.check_row(_row(2, frames="9"))


def test_split_merge_is_in_duration_then_id_order(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(row_line(_row(1)) + row_line(_row(3)))
    b.write_text(row_line(_row(2)) + row_line(_row(3, id="1-2-0000")))
    merged = [json.loads(line)["id"] for line in mf.merged_lines([a, b])]
    assert merged == ["1-2-0001", "1-2-0002", "1-2-0000", "1-2-0003"]
    b.write_text(row_line(_row(2)) + "{\n")
    with pytest.raises(ManifestError, match=rf"{b}:2: not JSON"):
        list(mf.merged_lines([a, b]))
    with pytest.raises(ManifestError, match="missing although its subset is marked prepared"):
        list(mf.merged_lines([a, tmp_path / "gone.jsonl"]))
