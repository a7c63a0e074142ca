"""The 29 output labels: the single definition used by preparation, training and decoding.

Index 0 is the CTC blank, index 28 the space, as in the 2018 reference's labels.json.
"""

import numpy as np

BLANK = 0
LABELS = "_'ABCDEFGHIJKLMNOPQRSTUVWXYZ "
assert len(LABELS) == 29

_INDEX = {char: i for i, char in enumerate(LABELS) if i != BLANK}
# byte -> label index, -1 for a byte that is no label: encodes whole arrays of ASCII text at once
CODES = np.full(256, -1, np.int8)
CODES[[ord(char) for char in _INDEX]] = list(_INDEX.values())


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


def encode_bytes(text: np.ndarray) -> np.ndarray:
    """UTF-8 bytes (L,) uint8 -> label indices (L,) int8, -1 where a byte is not a label's character
    (the caller names the utterance and character: `encode` on its text says which)."""
    return CODES[text]
