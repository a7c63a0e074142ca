"""The 29 output labels: the single definition used by preparation, training and decoding.

Index 0 is the CTC blank, index 28 the space, as in the 2018 reference's labels.json.
"""

import functools

BLANK = 0
LABELS = "_'ABCDEFGHIJKLMNOPQRSTUVWXYZ "
assert len(LABELS) == 29

_INDEX = {char: i for i, char in enumerate(LABELS) if i != BLANK}


class UnknownCharacter(ValueError):
    """A transcript holds a character outside the 28 non-blank labels."""


def _unknown(char: str) -> UnknownCharacter:
    return UnknownCharacter(f"character {char!r} (U+{ord(char):04X}) is not one of the labels {LABELS[1:]!r}")


def normalise(text: str) -> str:
    """Upper-case and collapse runs of white space; LibriSpeech transcripts already are.

    Raises UnknownCharacter naming the first non-ASCII character: str.upper() would turn some
    into ASCII letters ('ß' -> 'SS', 'ﬁ' -> 'FI', 'ſ' -> 'S', 'ı' -> 'I') that pass the label check.
    """
    if not text.isascii():
        raise _unknown(next(char for char in text if not char.isascii()))
    return " ".join(text.upper().split())


def encode(text: str) -> list[int]:
    """Transcript -> label indices (1..28). Raises UnknownCharacter naming the character."""
    try:
        return [_INDEX[char] for char in text]
    except KeyError as err:
        raise _unknown(err.args[0]) from None


def check(text: str) -> None:
    """UnknownCharacter naming the first character of text that is no label: encode's check, without its list."""
    others = text.translate(_NOT_LABELS)
    if others:
        raise _unknown(others[0])


_NOT_LABELS = str.maketrans("", "", LABELS[1:])  # deletes every label's character


def encode_bytes(text):
    """UTF-8 bytes (L,) uint8 numpy array -> label indices (L,) int8, -1 where a byte is not a label's
    character (the caller names the utterance and character: `encode` on its text says which)."""
    return _codes()[text]


@functools.cache
def _codes():
    """byte -> label index, (256,) int8, -1 for a byte that is no label: encodes whole arrays of ASCII text at once."""
    import numpy as np  # here, not above: data.verify imports this module (via data.librispeech) before it hashes

    codes = np.full(256, -1, np.int8)
    codes[[ord(char) for char in _INDEX]] = list(_INDEX.values())
    return codes
