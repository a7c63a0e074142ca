"""The manifest: one JSON Lines row per utterance, the contract between data preparation and training.

    {"id": "19-198-0001", "subset": "train-clean-100", "duration": 14.845, "frames": 1486,
     "transcript": "NORTHANGER ABBEY", "audio": "LibriSpeech/train-clean-100/19/198/19-198-0001.flac",
     "features": "features/train-clean-100/19-198.npy", "offset": 0}

duration in seconds; paths relative to the dataset directory; features[offset:offset+frames] are the
utterance's frames. A manifest is sorted by ascending (duration, id); a split manifest (train, val,
test) is the merge of its prepared subsets' manifests (merged_lines).

One parser reads every line, whether one (parse_row) or a whole file (Manifest.read, data.verify,
the split merge): parse_lines. It decodes a line one of two ways, to the same values:
  - a line laid out as row_line writes it, whose strings are printable ASCII without escapes (every
    line prepare writes for LibriSpeech), is decoded by numpy with every such line of its chunk at
    once: its quotes delimit every key and string, the bytes outside the values must be row_line's
    skeleton exactly, and its numbers plain decimals, converted to the values json.loads gives;
  - any other line by json.loads, then checked for its fields and their types.
The value checks (_VALUE_CHECKS) then run over the columns of all rows alike, so a line's verdict
and its error's words depend on the line alone: not on the way it was decoded, its neighbours or
the chunk it was read in.

No Python object per row: a Manifest holds numpy columns and FlatStrings, so LibriSpeech's 281,241
training rows cost about 80 MB, and forked DataLoader workers that read them copy none of it.
"""

import heapq
import json
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from data.dataset_dir import DatasetDir, DatasetError, is_inside
from data.librispeech import SPLITS


class ManifestError(DatasetError):
    """A malformed manifest row; the message names the file and line."""


class RowError(ValueError):
    """What is wrong with one manifest row (without where it is: the caller knows the file and line)."""


# name -> accepted JSON types, in the order prepare writes them (bool, a subclass of int, never accepted).
FIELDS = {
    "id": (str,),
    "subset": (str,),
    "duration": (int, float),
    "frames": (int,),
    "transcript": (str,),
    "audio": (str,),
    "features": (str,),
    "offset": (int,),
}
NUMBERS = {"duration": np.float64, "frames": np.int64, "offset": np.int64}  # how each number is held
STRINGS = tuple(key for key in FIELDS if key not in NUMBERS)
_INT64 = range(-(2**63), 2**63)
_ITEM_SEPARATOR, _KEY_SEPARATOR = ", ", ": "  # json.dumps's own, spelled out: the skeleton below depends on them


# ---------------------------------------------------------------- rows


def make_row(
    uid: str, subset: str, duration: float, frames: int, transcript: str, audio: str, features: str, offset: int
) -> dict:
    """A manifest row (the module docstring), in FIELDS order; check_rows validates rows in bulk."""
    return dict(
        id=uid,
        subset=subset,
        duration=duration,
        frames=frames,
        transcript=transcript,
        audio=audio,
        features=features,
        offset=offset,
    )


def row_line(row: dict) -> str:
    """The row as one JSON Lines line, exactly as prepare writes it."""
    return json.dumps(row, ensure_ascii=False, separators=(_ITEM_SEPARATOR, _KEY_SEPARATOR)) + "\n"


def row_key(row: dict) -> tuple[float, str]:
    """Manifests are sorted by this: ascending duration, ties by id."""
    return row["duration"], row["id"]


def parse_row(line: bytes | str) -> dict:
    """One manifest line -> its row, validated; RowError saying what is wrong (parse_lines on one line)."""
    data = line.encode("utf-8", "surrogatepass") if isinstance(line, str) else line
    data = data.rstrip(b"\n")
    if b"\n" in data:
        raise RowError("holds a line break: not one line")
    parsed = parse_lines(data + b"\n")
    if parsed.errors:
        raise parsed.errors[0]
    return parsed.columns.row(0)


def check_rows(rows: list[dict], where: str = "rows") -> None:
    """ManifestError naming `where`[index] of the first row that is not a valid row (as parse_lines checks)."""
    Columns.of_rows(rows, where)


def check_row(row) -> dict:
    """The row if it has every field with its type and a sensible value; else RowError."""
    errors = Columns.of_rows([row]).errors
    if errors:
        raise errors[0]
    return row


# ---------------------------------------------------------------- strings without an object each


class FlatStrings:
    """Strings held as one uint8 array of their UTF-8 bytes and offsets (n + 1,), no Python object per
    string: reading one never writes to the pages that hold them (no reference count), so forked
    DataLoader workers share them with the parent for good."""

    def __init__(self, chars: np.ndarray, offsets: np.ndarray):
        self.chars, self.offsets = chars, offsets

    @classmethod
    def from_bytes(cls, items: list[bytes]) -> "FlatStrings":
        lengths = np.fromiter(map(len, items), np.int64, len(items))
        return cls(np.frombuffer(b"".join(items), np.uint8).copy(), _offsets(lengths))

    @classmethod
    def from_ranges(cls, chars: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> "FlatStrings":
        """The strings chars[starts[i]:ends[i]], copied out; the ranges ascend and do not overlap."""
        lengths = ends - starts
        offsets = _offsets(lengths)
        if offsets[-1] * 10 < len(chars):  # a few short strings: gather their bytes by index
            picked = np.arange(offsets[-1]) + np.repeat(starts - offsets[:-1], lengths)
        else:  # more: a mask of all chars, run by run (gap, string, gap, string, ..., gap)
            runs = np.empty(2 * len(starts) + 1, np.int64)
            runs[1::2] = lengths
            runs[0:-1:2] = starts - np.concatenate(([0], ends[:-1]))
            runs[-1] = len(chars) - (ends[-1] if len(ends) else 0)
            strings = np.zeros(len(runs), bool)
            strings[1::2] = True
            picked = np.repeat(strings, runs)
        return cls(chars[picked], offsets)

    @classmethod
    def concat(cls, parts: list["FlatStrings"]) -> "FlatStrings":
        if not parts:
            return cls.from_bytes([])
        starts = np.cumsum([0] + [len(p.chars) for p in parts[:-1]])
        offsets = np.concatenate([parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, starts)])
        return cls(np.concatenate([p.chars for p in parts]), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def codes(self, i: int) -> np.ndarray:
        """The i-th string's bytes, a view (L,) uint8."""
        return self.chars[self.offsets[i] : self.offsets[i + 1]]

    def __getitem__(self, i: int) -> str:
        return self.codes(i).tobytes().decode("utf-8")

    def tolist(self) -> list[str]:
        """Every string, as Python strings (n objects: for a check that goes row by row, not for keeping)."""
        text, offsets = self.chars.tobytes(), self.offsets.tolist()
        return [text[a:b].decode("utf-8") for a, b in zip(offsets, offsets[1:])]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def select(self, indices: np.ndarray) -> "FlatStrings":
        lengths = self.lengths()[indices]
        offsets = _offsets(lengths)
        if len(indices) < 2 or np.all(np.diff(indices) > 0):  # increasing (a filter): a byte mask will do
            chosen = np.zeros(len(self), bool)
            chosen[indices] = True
            return FlatStrings(self.chars[np.repeat(chosen, self.lengths())], offsets)
        # byte k of the result is byte (k - its string's new start) after its string's old start
        gather = np.arange(offsets[-1], dtype=np.int64) + np.repeat(self.offsets[:-1][indices] - offsets[:-1], lengths)
        return FlatStrings(self.chars[gather], offsets)


def _offsets(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


class Categories:
    """Strings with few distinct values (a manifest's subsets, its shards): the distinct ones in order
    of first appearance (`table`) and each string's index into them, (n,) int64."""

    def __init__(self, table: list[str], index: np.ndarray):
        self.table, self.index = table, index

    @classmethod
    def of(cls, items: list) -> "Categories":
        """Of str or of ASCII bytes items."""
        position = {item: k for k, item in enumerate(dict.fromkeys(items))}
        table = [item.decode("ascii") if isinstance(item, bytes) else item for item in position]
        return cls(table, np.fromiter(map(position.__getitem__, items), np.int64, len(items)))

    @classmethod
    def concat(cls, parts: list["Categories"]) -> "Categories":
        position: dict[str, int] = {}
        indices = [
            np.array([position.setdefault(item, len(position)) for item in p.table], np.int64)[p.index] for p in parts
        ]
        return cls(list(position), np.concatenate(indices) if indices else np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> str:
        return self.table[self.index[i]]

    def tolist(self) -> list[str]:
        """Every string (n references to the table's: for a check that goes row by row)."""
        return [self.table[k] for k in self.index.tolist()]

    def select(self, indices: np.ndarray) -> "Categories":
        return Categories(self.table, self.index[indices])


# ---------------------------------------------------------------- the one parser

CATEGORIES = ("subset", "features")  # the string fields held as Categories, the others as FlatStrings


class Columns:
    """Rows as columns: numbers as arrays (NUMBERS' dtypes), strings as FlatStrings or Categories, each (n,).

    `errors`: {row index: RowError} of the rows that failed a check; their values are still here.
    """

    def __init__(self, values: dict, errors: dict[int, RowError] | None = None):
        self.values = values
        self.errors = errors if errors is not None else _value_errors(values)

    @classmethod
    def of_rows(cls, rows: list, where: str | None = None) -> "Columns":
        """Rows (dicts, as json.loads makes them) as columns, each checked; ManifestError naming
        `where`[index] of the first bad one if `where` is given, else its error in `errors`."""
        errors, typed = {}, []
        for index, row in enumerate(rows):
            try:
                typed.append(_typed(row))
            except RowError as err:
                errors[index] = err
                typed.append(_EMPTY_ROW)
        values = {key: np.array([row[key] for row in typed], dtype=dtype) for key, dtype in NUMBERS.items()}
        values |= {key: Categories.of([row[key] for row in typed]) for key in CATEGORIES}
        values |= {
            key: FlatStrings.from_bytes([row[key].encode("utf-8") for row in typed])
            for key in STRINGS
            if key not in CATEGORIES
        }
        columns = cls(values, errors | _value_errors(values, skip=errors))
        if where is not None and columns.errors:
            index = min(columns.errors)
            raise ManifestError(f"{where}[{index}]: {columns.errors[index]}")
        return columns

    @classmethod
    def concat(cls, parts: list["Columns"]) -> "Columns":
        kinds = {key: type(parts[0].values[key]) for key in FIELDS}
        values = {
            key: np.concatenate([p.values[key] for p in parts])
            if kind is np.ndarray
            else kind.concat([p.values[key] for p in parts])
            for key, kind in kinds.items()
        }
        errors, start = {}, 0
        for part in parts:
            errors |= {start + i: err for i, err in part.errors.items()}
            start += len(part)
        return cls(values, errors)

    def __len__(self) -> int:
        return len(self.values["frames"])

    def select(self, indices: np.ndarray) -> "Columns":
        """The rows at `indices` (each once), with their errors."""
        position = {int(i): k for k, i in enumerate(indices)} if self.errors else {}
        errors = {position[i]: err for i, err in self.errors.items() if i in position}
        return Columns(
            {key: self.values[key][indices] if key in NUMBERS else self.values[key].select(indices) for key in FIELDS},
            errors,
        )

    def value(self, key: str, i: int):
        column = self.values[key]
        return column[i].item() if key in NUMBERS else column[i]

    def row(self, i: int) -> dict:
        return make_row(*(self.value(key, i) for key in FIELDS))


class Parsed(NamedTuple):
    """What parse_lines makes of whole lines: the good rows, and what is wrong with each other line."""

    columns: Columns  # the good rows, in line order
    lines: np.ndarray  # (n_good,) int64: each good row's line, 0-based
    errors: dict[int, RowError]  # 0-based line -> what is wrong with it, in line order


_PAD = 32  # readable bytes a parsed text needs after its end: lines are read 8 bytes at a time, past their ends


def parse_lines(data: bytes) -> Parsed:
    """Every line of `data` (lines ending in a newline; the last may lack it) decoded and checked."""
    if data and not data.endswith(b"\n"):
        data += b"\n"
    return _parse(np.frombuffer(data + bytes(_PAD), np.uint8), len(data))


def _parse(buffer: np.ndarray, size: int) -> Parsed:
    """parse_lines of buffer[:size] (whole lines; at least _PAD bytes follow them in buffer)."""
    chars = buffer[:size]
    ends = np.flatnonzero(chars == _NEWLINE)  # (n,) each line's newline
    starts = np.concatenate(([0], ends + 1))[:-1]
    canonical, columns = _decode_canonical(buffer, size, starts, ends)
    lines = np.flatnonzero(canonical)
    errors = {}
    others = np.flatnonzero(~canonical)
    if len(others):  # decoded by json.loads; merged back into line order
        rows, decoded_lines = [], []
        for line, start, end in zip(others.tolist(), starts[others].tolist(), ends[others].tolist()):
            try:
                rows.append(_decoded_json(chars[start:end].tobytes()))
                decoded_lines.append(line)
            except RowError as err:
                errors[line] = err
        lines = np.concatenate([lines, np.array(decoded_lines, np.int64)])
        order = np.argsort(lines, kind="stable")
        columns, lines = Columns.concat([columns, Columns.of_rows(rows)]).select(order), lines[order]
    errors |= {int(lines[i]): err for i, err in columns.errors.items()}
    if columns.errors:
        good = np.setdiff1d(np.arange(len(columns)), list(columns.errors))
        columns, lines = columns.select(good), lines[good]
    return Parsed(columns, lines, dict(sorted(errors.items())))


def _decoded_json(line: bytes) -> dict:
    """A line -> the row json.loads makes of it, with every field of its type; else RowError."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RowError(f"not UTF-8 (byte {line[err.start]:#04x} at column {err.start + 1})") from None
    try:
        return _typed(json.loads(text))
    except json.JSONDecodeError as err:
        raise RowError(f"not JSON ({err.msg} at column {err.colno})") from None


def _typed(row) -> dict:
    """The row if it is an object with every field of its type, and a value its column can hold; else RowError."""
    if not isinstance(row, dict):
        raise RowError(f"a JSON {type(row).__name__}, not an object")
    missing = [key for key in FIELDS if key not in row]
    if missing:
        raise RowError(f"missing field {', '.join(repr(key) for key in missing)}")
    for key, kinds in FIELDS.items():
        value = row[key]
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise RowError(
                f"field {key!r} is {type(value).__name__} {str(value)[:40]!r}, "
                f"not {' or '.join(t.__name__ for t in kinds)}"
            )
        if isinstance(value, str) and not _is_unicode(value):
            raise RowError(f"field {key!r} is {value[:40]!r}: not valid Unicode")
        if kinds == (int,) and value not in _INT64:
            raise RowError(f"field {key!r} is {value!r}: beyond the 64-bit integers a manifest holds")
        if key == "duration" and isinstance(value, int) and not abs(value) < 2**1023:
            raise RowError(f"field {key!r} is {str(value)[:40]}...: not a finite number >= 0")
    return row


_EMPTY_ROW = {key: "" if key in STRINGS else 0 for key in FIELDS}  # where a row failed its types


def _is_unicode(text: str) -> bool:
    """False for a string with lone surrogates (JSON allows "\\ud800"), which no file holds as UTF-8."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _bad_paths(paths) -> np.ndarray:
    """(n,) bool: not a relative path inside the dataset directory, as dataset_dir.is_inside decides:
    for Categories on its table; for FlatStrings on the paths the bytes show could fail it (empty, a
    leading '/', a backslash or '..' anywhere)."""
    if isinstance(paths, Categories):
        return np.array([not is_inside(path) for path in paths.table], bool)[paths.index]
    lengths, chars = paths.lengths(), paths.chars
    suspect = lengths == 0
    suspect[~suspect] = chars[paths.offsets[:-1][~suspect]] == _SLASH
    marks = np.flatnonzero((chars[:-1] == _DOT) & (chars[1:] == _DOT) | (chars[:-1] == _BACKSLASH))
    if len(chars) and chars[-1] == _BACKSLASH:
        marks = np.append(marks, len(chars) - 1)
    suspect[np.searchsorted(paths.offsets, marks, side="right") - 1] = True
    bad = np.zeros(len(paths), bool)
    for i in np.flatnonzero(suspect).tolist():
        bad[i] = not is_inside(paths[i])
    return bad


# (field, its column -> (n,) bool: the rows that fail, what is wrong with such a value), in the order
# a row is checked: a row's error is the first check it fails.
_VALUE_CHECKS = (
    ("id", lambda ids: ids.lengths() == 0, lambda value: "field 'id' is empty"),
    (
        "duration",
        lambda seconds: ~(np.isfinite(seconds) & (seconds >= 0)),
        lambda value: f"field 'duration' is {value!r}: not a finite number >= 0",
    ),
    ("frames", lambda frames: frames < 1, lambda value: f"field 'frames' is {value!r}: not at least 1"),
    ("offset", lambda offset: offset < 0, lambda value: f"field 'offset' is {value!r}: negative"),
    *(
        (
            key,
            _bad_paths,
            lambda value, key=key: f"field {key!r} is {value!r}: not a relative path inside the dataset directory",
        )
        for key in ("audio", "features")
    ),
)


def _value_errors(values: dict, skip: dict | None = None) -> dict[int, RowError]:
    """{row index: RowError} of the first value check each row fails (rows in `skip` aside)."""
    errors = {}
    for key, fails, what in _VALUE_CHECKS:
        column = values[key]
        for i in np.flatnonzero(fails(column)).tolist():
            if i not in errors and not (skip and i in skip):
                errors[i] = RowError(what(column[i].item() if key in NUMBERS else column[i]))
    return errors


# ------------------------------------------------ decoding lines laid out as row_line writes them

_NEWLINE, _QUOTE, _SLASH, _DOT, _BACKSLASH, _ZERO = b'\n"/.\\0'
_INT_DIGITS = 18  # at most: always an int64
_DECIMAL_DIGITS = 15  # at most: the mantissa is exact in a float64 (below 2**53), as is 10**k
_NUMBER_BYTES = 24  # read of each number: more than the longest plain one (18 digits; 15 and a dot)


def _skeleton() -> tuple[list[bytes], list[tuple[str, int]]]:
    """row_line's layout: the skeleton's pieces (before the first value, between values, after the
    last, with the newline) and, per field, where its value is: (field, index of the quote that opens
    a string value or closes a number's key)."""
    pieces, places, piece, quote = [], [], "{", 0
    for n, key in enumerate(FIELDS):
        piece += (_ITEM_SEPARATOR if n else "") + f'"{key}"{_KEY_SEPARATOR}'
        if key in STRINGS:
            pieces.append((piece + '"').encode())
            places.append((key, quote + 2))
            piece, quote = '"', quote + 4
        else:
            pieces.append(piece.encode())
            places.append((key, quote + 1))
            piece, quote = "", quote + 2
    pieces.append((piece + "}\n").encode())
    return pieces, places


_PIECES, _PLACES = _skeleton()
_QUOTES = sum(piece.count(b'"') for piece in _PIECES)  # quotes in such a line


def _decode_canonical(buffer: np.ndarray, size: int, starts: np.ndarray, ends: np.ndarray):
    """((n,) bool: the lines decoded here, Columns of those lines): the lines laid out as row_line
    writes them, strings of printable ASCII without quotes and backslashes, plain numbers. The
    others are left to json.loads.

    A line of printable ASCII without backslashes with as many quotes as the skeleton has is split at
    its quotes: they delimit every key and string value (a string cannot hold a quote unescaped);
    numbers lie between ': ' and the next piece. The line is decoded here only if every piece of the
    skeleton is where the values' lengths put it, with row_line's bytes."""
    chars = buffer[:size]
    quotes = np.flatnonzero(chars == _QUOTE)
    n = len(starts)
    at = quotes.reshape(n, _QUOTES) if len(quotes) == n * _QUOTES else np.zeros((n, _QUOTES), np.int64)
    if n and (at[:, 0] > starts).all() and (at[:, -1] < ends).all():  # each line's own: each has _QUOTES
        candidates = np.ones(n, bool)
    else:
        first = np.searchsorted(quotes, starts)
        candidates = np.searchsorted(quotes, ends) - first == _QUOTES
        at = quotes[np.minimum(first[:, None] + np.arange(_QUOTES), len(quotes) - 1)] if len(quotes) else at
    if np.count_nonzero(chars < 0x20) != n or (chars >= 0x7F).any() or (chars == _BACKSLASH).any():
        odd = np.flatnonzero(((chars < 0x20) & (chars != _NEWLINE)) | (chars >= 0x7F) | (chars == _BACKSLASH))
        candidates &= np.searchsorted(odd, ends) == np.searchsorted(odd, starts)
    lines = np.flatnonzero(candidates)
    if len(lines) < n:
        at = at[lines]  # (m, _QUOTES) every quote of each line
    spans = {}  # field -> (starts, ends) of its values
    for k, (key, quote) in enumerate(_PLACES):
        if key in STRINGS:
            spans[key] = at[:, quote] + 1, at[:, quote + 1]
        else:  # after ': ', up to the next piece
            end = at[:, quote + 1] - _PIECES[k + 1].index(b'"') if k + 1 < len(_PLACES) else ends[lines] - 1
            spans[key] = at[:, quote] + 1 + len(_KEY_SEPARATOR), end
    ok = np.ones(len(lines), bool)
    piece_starts = [starts[lines]] + [end for _, end in spans.values()]
    piece_ends = [start for start, _ in spans.values()] + [ends[lines] + 1]
    for piece, start, end in zip(_PIECES, piece_starts, piece_ends):
        ok &= end - start == len(piece)
    words = _words(buffer, size)
    for piece, start in zip(_PIECES, piece_starts):
        for byte in range(0, len(piece), 8):  # 8 bytes at a time
            expected, mask = _word(piece[byte : byte + 8])
            ok &= words[start + byte] & mask == expected  # at most 16 bytes past the text: inside _PAD
    values = {}
    for key, dtype in NUMBERS.items():
        values[key], plain = _plain_numbers(words, *spans[key], integer=dtype is np.int64)
        ok &= plain
    if not ok.all():  # not laid out as row_line does: json.loads decides
        lines, values = lines[ok], {key: numbers[ok] for key, numbers in values.items()}
        spans = {key: (start[ok], end[ok]) for key, (start, end) in spans.items()}
    for key in STRINGS:
        if key in CATEGORIES:
            values[key] = _categories(words, *spans[key])
        else:
            values[key] = FlatStrings.from_ranges(chars, *spans[key])
    decoded = np.zeros(n, bool)
    decoded[lines] = True
    return decoded, Columns(values)


def _words(buffer: np.ndarray, size: int) -> np.ndarray:
    """(size + _PAD - 7,) uint64: the 8 bytes from each position of buffer[:size + _PAD], little-endian (a view)."""
    return np.ndarray(shape=(size + _PAD - 7,), dtype="<u8", buffer=buffer, strides=(1,))


def _text(words: np.ndarray, starts: np.ndarray, ends: np.ndarray, most: int) -> tuple[np.ndarray, np.ndarray]:
    """((m, 8k) uint8: the text from starts to ends, up to `most` bytes, NUL-padded; (m,) its lengths)."""
    lengths = ends - starts
    count = -(-int(np.clip(lengths.max(initial=1), 1, most)) // 8)  # words of the longest
    text = np.empty((len(starts), count), "<u8")
    for k in range(count):
        text[:, k] = words[np.clip(starts + 8 * k, 0, len(words) - 1)]
    text = text.view(np.uint8)
    text *= np.arange(8 * count) < lengths[:, None]
    return text, lengths


def _word(text: bytes) -> tuple[np.uint64, np.uint64]:
    """(up to 8 bytes of text as _words reads them, the mask of those bytes)."""
    return np.uint64(int.from_bytes(text, "little")), np.uint64((1 << 8 * len(text)) - 1)


_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93], np.uint64)


def _categories(words: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> Categories:
    """Categories of the plain strings from starts to ends (ASCII without NUL), found by a 64-bit
    hash of each string's words, then checked byte for byte against the first string of its hash."""
    text, lengths = _text(words, starts, ends, int((ends - starts).max(initial=1)))
    rows = text.view("<u8")  # (m, k) the NUL-padded words of each string
    with np.errstate(over="ignore"):
        mix = np.resize(_MIX, rows.shape[1])
        hashes = (rows * mix).sum(axis=1, dtype=np.uint64) + lengths.astype(np.uint64) * _MIX[-1]
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    if not (rows == rows[first[inverse]]).all():  # two strings of one hash (never seen): by their bytes
        return Categories.of(text.view(f"S{text.shape[1]}").ravel().tolist())
    order = np.argsort(first)  # the distinct strings in order of first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    table = [text[i, : lengths[i]].tobytes().decode("ascii") for i in first[order].tolist()]
    return Categories(table, rank[inverse.ravel()])


def _plain_numbers(words: np.ndarray, starts: np.ndarray, ends: np.ndarray, integer: bool):
    """((m,) values, (m,) bool: the text is a plain number) of the text from starts to ends: at most
    _INT_DIGITS digits (integer), else at most _DECIMAL_DIGITS digits with at most one '.' between
    two of them; no leading zero. Their values are json.loads's: int(text); float(text), which a
    mantissa below 2**53 divided by an exact 10**k is (IEEE division is correctly rounded)."""
    text, lengths = _text(words, starts, ends, _NUMBER_BYTES)
    width = text.shape[1]
    inside = np.arange(width) < lengths[:, None]
    digit = (text - _ZERO < 10) & inside
    dot = (text == _DOT) & inside
    dots = np.count_nonzero(dot, 1)
    dot_at = np.where(dots > 0, np.argmax(dot, 1), -1)
    plain = (lengths >= 1) & (lengths <= width) & np.all(digit | dot | ~inside, 1)
    plain &= (dots == 0) if integer else (dots <= 1) & (dot_at != 0) & (dot_at != lengths - 1)
    plain &= lengths - dots <= (_INT_DIGITS if integer else _DECIMAL_DIGITS)
    plain &= (text[:, 0] != _ZERO) | (lengths == 1) | (dot_at == 1)  # a leading 0: alone or before the dot
    mantissa = np.zeros(len(lengths), np.int64)
    for column in range(width):  # digit by digit: Horner's rule
        mantissa = np.where(digit[:, column], mantissa * 10 + (text[:, column] - _ZERO), mantissa)
    if integer:
        return mantissa, plain
    return mantissa.astype(np.float64) / 10.0 ** np.where(dots > 0, lengths - 1 - dot_at, 0), plain


# ---------------------------------------------------------------- the manifest, as columns

_READ_CHUNK = 8 << 20


class Manifest:
    """A manifest's rows as columns: numpy arrays and flat strings, no Python object per row.

    duration (n,) float64 s, frames (n,) int64, offset (n,) int64 (the utterance's first frame in its
    shard), shard (n,) int32 (index into `shards`: relative paths), subset (n,) int16 (index into
    `subsets`); id(i), transcript(i), row(i). LibriSpeech's 281,241 training rows take about 80 MB.
    """

    def __init__(self, columns: dict):
        self.duration: np.ndarray = columns["duration"]
        self.frames: np.ndarray = columns["frames"]
        self.offset: np.ndarray = columns["offset"]
        self.shard: np.ndarray = columns["shard"]
        self.shards: list[str] = columns["shards"]
        self.subset: np.ndarray = columns["subset"]
        self.subsets: list[str] = columns["subsets"]
        self.ids: FlatStrings = columns["id"]
        self.transcripts: FlatStrings = columns["transcript"]
        self.audio: FlatStrings = columns["audio"]

    @classmethod
    def read(cls, path) -> "Manifest":
        """Every row of a JSON Lines manifest, validated (parse_lines); ManifestError naming the file
        and line of the first bad one."""
        parts, line = [], 0
        try:
            with open(path, "rb") as f:
                for buffer, size in _line_chunks(f):
                    parsed = _parse(buffer, size)
                    if parsed.errors:
                        number, err = next(iter(parsed.errors.items()))
                        raise ManifestError(f"{path}:{line + number + 1}: {err}")
                    parts.append(parsed.columns)
                    line += len(parsed.lines)
        except FileNotFoundError:
            raise DatasetError(f"{path}: no such manifest; prepare the data first with ./download_dataset.sh") from None
        return cls.of_columns(Columns.concat(parts) if parts else Columns.of_rows([]))

    @classmethod
    def from_rows(cls, rows: list[dict], where: str = "rows") -> "Manifest":
        """A Manifest of row dicts, each validated; ManifestError naming `where`[index] of a bad one."""
        return cls.of_columns(Columns.of_rows(rows, where))

    @classmethod
    def of_columns(cls, columns: Columns) -> "Manifest":
        values = columns.values
        shards, subsets = values["features"], values["subset"]
        return cls(
            {key: values[key] for key in ("duration", "frames", "offset", "id", "transcript", "audio")}
            | {"shard": shards.index.astype(np.int32), "shards": shards.table}
            | {"subset": subsets.index.astype(np.int16), "subsets": subsets.table}
        )

    def __len__(self) -> int:
        return len(self.duration)

    def id(self, i: int) -> str:
        return self.ids[i]

    def transcript(self, i: int) -> str:
        return self.transcripts[i]

    def row(self, i: int) -> dict:
        """Row i as a dict of its FIELDS (duration as a float)."""
        return make_row(
            self.ids[i],
            self.subsets[self.subset[i]],
            float(self.duration[i]),
            int(self.frames[i]),
            self.transcripts[i],
            self.audio[i],
            self.shards[self.shard[i]],
            int(self.offset[i]),
        )

    def select(self, indices) -> "Manifest":
        """The rows at `indices`, in that order (e.g. np.flatnonzero(manifest.duration <= 16.7))."""
        indices = np.asarray(indices, dtype=np.int64)
        columns = {key: getattr(self, key)[indices] for key in ("duration", "frames", "offset", "shard", "subset")}
        columns |= {"id": self.ids.select(indices), "transcript": self.transcripts.select(indices)}
        return Manifest(columns | {"audio": self.audio.select(indices), "shards": self.shards, "subsets": self.subsets})


def _line_chunks(f) -> Iterator[tuple[np.ndarray, int]]:
    """The file in chunks of whole lines, about _READ_CHUNK bytes each: (buffer, size), the lines
    buffer[:size], each ending in a newline, followed by _PAD bytes or more. One buffer, reused:
    a chunk is gone once the next is asked for."""
    buffer, size = np.zeros(_READ_CHUNK + _PAD, np.uint8), 0  # size: bytes read, not yet yielded
    while True:
        if size + _PAD == len(buffer):  # a line longer than the buffer
            buffer = np.concatenate([buffer, np.zeros(len(buffer), np.uint8)])
        read = f.readinto(memoryview(buffer)[size : len(buffer) - _PAD])
        if not read:
            break
        size += read
        end = _last_line_end(buffer[:size])
        if end:
            yield buffer, end
            buffer[: size - end] = buffer[end:size]
            size -= end
    if size:  # the last line, without its newline
        buffer[size] = _NEWLINE
        yield buffer, size + 1


def _last_line_end(chars: np.ndarray) -> int:
    """The index after the last newline of chars, 0 if it holds none."""
    for stop in range(len(chars), 0, -(1 << 16)):
        newlines = np.flatnonzero(chars[max(0, stop - (1 << 16)) : stop] == _NEWLINE)
        if len(newlines):
            return max(0, stop - (1 << 16)) + int(newlines[-1]) + 1
    return 0


# ---------------------------------------------------------------- splits


def split_sources(dataset: DatasetDir, split: str) -> list[str]:
    """The split's subsets that are marked prepared: the split manifest is their merge."""
    return [s for s in SPLITS[split] if dataset.is_marked("prepare", s)]


def merged_lines(paths: list[Path]) -> Iterator[str]:
    """The lines of sorted manifests merged into one ascending (duration, id) order: a split manifest.

    ManifestError (naming file and line) on a malformed row or a missing file."""
    manifests = [_checked_lines(path) for path in paths]
    if len(manifests) == 1:  # the merge of one manifest is its lines
        yield from manifests[0][0]
        return
    keyed = [
        zip(zip(parsed.columns.values["duration"].tolist(), parsed.columns.values["id"].tolist()), lines)
        for lines, parsed in manifests
    ]
    for _, line in heapq.merge(*keyed, key=lambda item: item[0]):
        yield line


def _checked_lines(path: Path) -> tuple[list[str], Parsed]:
    """(the manifest's lines, each with its newline; parse_lines of them): ManifestError unless every
    row is good."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"{path}: missing although its subset is marked prepared") from None
    parsed = parse_lines(data)
    if parsed.errors:
        number, err = next(iter(parsed.errors.items()))
        raise ManifestError(f"{path}:{number + 1}: {err}")
    lines = data.decode("utf-8").split("\n")[: len(parsed.lines)]
    return [line + "\n" for line in lines], parsed
