"""espeak-ng from the pinned `espeakng-loader` wheel (libespeak-ng 1.52 and its data), through ctypes.

No system package is involved, so a corpus is the same bytes on every machine with the same wheel.
`python -m synthetic.espeak` (run by synthetic.corpus, one process per batch of utterances) reads a
JSON list of {"id", "text", "voice", "speed", "pitch"} on stdin and writes, for each request in
order, a little-endian uint32 sample count then that many little-endian int16 samples at
SAMPLE_RATE to stdout. On a failure it names the utterance in one `error:` line on stderr and exits 1
(exit_status).

Why a process of its own that forks once per utterance: libespeak-ng keeps state across utterances
that no API call resets (the pitch-flutter phase is a function-local static of wavegen.c, and
espeak_Initialize seeds its noise generator from the clock), so the same request gives other samples
after other requests, even after espeak_Terminate. Each utterance is synthesised in a child forked
from a process that has initialised the library and synthesised nothing, with the noise seed fixed:
its samples then depend on the request alone, not on the batch or the worker that rendered it. This
module imports only the standard library, exit_status and the wheel (no numpy and its thread
pool), so the process has one thread when it forks.
"""

import ctypes
import json
import os
import struct
import sys

import exit_status

SAMPLE_RATE = 22_050  # libespeak-ng's output rate
# speak_lib.h / espeak_ng.h constants
AUDIO_OUTPUT_SYNCHRONOUS = 2  # synthesise inside espeak_Synth, handing samples to the callback
INITIALIZE_DONT_EXIT = 0x8000  # report errors instead of exiting the process
PARAMETER_RATE, PARAMETER_PITCH = 1, 3  # words per minute (80-450); base pitch (0-99)
POSITION_CHARACTER = 1
CHARS_UTF8, END_PAUSE = 0x1, 0x1000  # END_PAUSE: a sentence pause at the end, as the espeak-ng CLI
NOISE_SEED = 1  # what `espeak-ng --deterministic` uses
SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakError(exit_status.Failure):
    """The wheel is missing, or libespeak-ng refused a voice or a text; the message names the utterance."""


def load() -> ctypes.CDLL:
    """The wheel's libespeak-ng, initialised on the wheel's data for synchronous synthesis."""
    try:
        import espeakng_loader
    except ImportError as err:
        raise EspeakError(
            "the espeakng-loader wheel is not installed: run `make setup` or `pip install -r requirements.txt`"
        ) from err
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [SynthCallback]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    data = espeakng_loader.get_data_path()
    rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(), INITIALIZE_DONT_EXIT)
    if rate != SAMPLE_RATE:
        raise EspeakError(f"libespeak-ng ({espeakng_loader.get_library_path()}, data {data}) failed to start: {rate}")
    return lib


def synthesize(lib: ctypes.CDLL, request: dict) -> bytes:
    """One request -> its int16 samples (native byte order) at SAMPLE_RATE."""
    chunks = []

    def collect(samples, count, _events):
        if samples and count > 0:
            chunks.append(ctypes.string_at(samples, 2 * count))
        return 0  # 0: go on

    callback = SynthCallback(collect)  # referenced until espeak_Synth returns
    lib.espeak_SetSynthCallback(callback)
    if lib.espeak_SetVoiceByName(request["voice"].encode()) != 0:
        raise EspeakError(f"voice {request['voice']!r} is not in the espeakng-loader wheel's data")
    lib.espeak_SetParameter(PARAMETER_RATE, request["speed"], 0)
    lib.espeak_SetParameter(PARAMETER_PITCH, request["pitch"], 0)
    lib.espeak_ng_SetRandSeed(NOISE_SEED)
    text = request["text"].encode()
    status = lib.espeak_Synth(text, len(text) + 1, 0, POSITION_CHARACTER, 0, CHARS_UTF8 | END_PAUSE, None, None)
    if status != 0 or not chunks:
        raise EspeakError(f"espeak_Synth failed (status {status}) on {request['text']!r}")
    return b"".join(chunks)


def encoded(samples: bytes) -> bytes:
    """Native int16 bytes -> the wire format: uint32 count, int16 samples, little-endian."""
    if sys.byteorder != "little":
        swapped = bytearray(samples)
        swapped[0::2], swapped[1::2] = samples[1::2], samples[0::2]
        samples = bytes(swapped)
    return struct.pack("<I", len(samples) // 2) + samples


def synthesize_in_child(lib: ctypes.CDLL, request: dict) -> None:
    """Fork; the child synthesises one request onto stdout and exits. EspeakError (with the child's
    words, which it sends back through a pipe) if it fails."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        code = 0
        try:
            payload = encoded(synthesize(lib, request))
            with os.fdopen(1, "wb", closefd=False) as out:
                out.write(payload)
        except BaseException as err:  # a child must never return into the parent's loop
            os.write(write_end, (str(err) if isinstance(err, EspeakError) else repr(err)).encode()[:4096])
            code = 1
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as words:
        why = words.read().decode(errors="replace")  # until the child exits: the pipe's end closes then
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code != 0:
        raise EspeakError(f"utterance {request.get('id')}: {why or f'synthesis exited with status {code}'}")


def main() -> int:
    return exit_status.run(_main)


def _main() -> None:
    requests = json.load(sys.stdin)
    lib = load()
    for request in requests:
        # Loading a voice (its dictionary, phoneme tables) is most of a child's work: done here once,
        # the children of a batch of one speaker's utterances share it. Selecting a voice synthesises
        # nothing, so the state a child starts from is still a function of its own voice only.
        lib.espeak_SetVoiceByName(request["voice"].encode())
        synthesize_in_child(lib, request)


if __name__ == "__main__":
    sys.exit(main())
