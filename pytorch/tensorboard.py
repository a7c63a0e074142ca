"""TensorBoard event files of a run's scalars, written without TensorBoard: `tensorboard --logdir results/`.

The trainer writes what the peers' users watch (loss, learning rate, gradient norm and throughput per
step; WER and CER per epoch) to <results-dir>/tensorboard/events.out.tfevents.<time>.<host>. The
format is TensorFlow's record file of `Event` protocol buffers:

    record  = uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)   (little-endian)
    Event   = 1: wall_time (double) | 2: step (int64) | 3: file_version (string) | 5: summary (Summary)
    Summary = 1: repeated Value;  Value = 1: tag (string) | 2: simple_value (float)

Writing these few fields by hand keeps the trainer free of TensorBoard's dependencies (protobuf, grpc,
about 20 MB), which an offline GPU machine's wheelhouse would otherwise carry; the `tensorboard`
package (requirements.txt) is only needed to view them, and a test reads them back with it.
"""

import socket
import struct
import time
from pathlib import Path

FILE_VERSION = b"brain.Event:2"
DIRECTORY = "tensorboard"  # under the results directory


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli polynomial, reflected
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The record format's checksum: crc32c rotated right by 15 bits plus a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): strings and embedded messages."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def event(wall_time: float, step: int = 0, scalars: dict[str, float] | None = None, file_version: bytes = b"") -> bytes:
    """One serialised Event: the file's version record, or the scalars of one step."""
    message = _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3 | 0) + _varint(step)
    if file_version:
        message += _field_bytes(3, file_version)
    if scalars:
        values = b"".join(
            _field_bytes(1, _field_bytes(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", value))
            for tag, value in scalars.items()
        )
        message += _field_bytes(5, values)
    return message


def record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


class EventWriter:
    """Appends scalar events to one new event file in `directory` (created); disabled: does nothing
    (every rank runs the same code, rank 0 writes)."""

    def __init__(self, directory: Path, enabled: bool = True):
        self.file = None
        if not enabled:
            return
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        now = time.time()
        # A resumed run adds a file beside the first: TensorBoard joins a directory's files by step.
        path = directory / f"events.out.tfevents.{int(now)}.{socket.gethostname()}"
        self.file = open(path, "ab")  # noqa: SIM115 (held open for the run; closed by close())
        self.file.write(record(event(now, file_version=FILE_VERSION)))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.file is not None:
            self.file.write(record(event(time.time(), step, values)))

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
