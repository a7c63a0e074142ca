"""Facts about LibriSpeech (openslr resource 12) and its language models (openslr resource 11): the one
place they are written down."""

from dataclasses import dataclass
from pathlib import PurePosixPath

from data import labels

MIRROR = "https://www.openslr.org/resources/12"


@dataclass(frozen=True)
class Subset:
    name: str
    md5: str  # of <name>.tar.gz
    bytes: int  # size of <name>.tar.gz
    utterances: int


SUBSETS = {
    s.name: s
    for s in (
        Subset("dev-clean", "42e2234ba48799c1f50f24a7926300a1", 337_926_286, 2_703),
        Subset("dev-other", "c8d0bcc9cca99d4f8b62fcc847357931", 314_305_928, 2_864),
        Subset("test-clean", "32fa31d27d2e1cad72775fee3f4849a9", 346_663_984, 2_620),
        Subset("test-other", "fb5a50374b501bb3bac4815ee91d3135", 328_757_843, 2_939),
        Subset("train-clean-100", "2a93770f6d5c6c964bc36631d331a522", 6_387_309_499, 28_539),
        Subset("train-clean-360", "c0e676e450a7ff2f54aeade5171606fa", 23_049_477_885, 104_014),
        Subset("train-other-500", "d1a0fd59409feb2c614ce4d30c387708", 30_593_501_606, 148_688),
    )
}

# The three splits the benchmark uses, each the union of LibriSpeech subsets.
SPLITS = {
    "train": ("train-clean-100", "train-clean-360", "train-other-500"),
    "val": ("dev-clean", "dev-other"),
    "test": ("test-clean", "test-other"),
}

SAMPLE_RATE = 16_000  # every LibriSpeech FLAC is 16 kHz, mono, 16 bit


def archive_name(subset: str) -> str:
    return f"{subset}.tar.gz"


def official_md5s() -> dict[str, str]:
    """archive file name -> md5, in the form of an md5sum.txt."""
    return {archive_name(s.name): s.md5 for s in SUBSETS.values()}


# ---------------------------------------------------------------- the language models (openslr resource 11)

LM_MIRROR = "https://www.openslr.org/resources/11"


@dataclass(frozen=True)
class LmFile:
    name: str
    md5: str | None  # None: not known here; the downloader then needs it from --checksums
    what: str


# The md5s are those of openslr's md5sum list for resource 11, as copied into the public downloader
# sdrobert/pytorch-database-prep (librispeech.py, FILE2MD5), whose seven audio md5s are exactly the
# SUBSETS' above. They could not be checked against openslr itself from where this was written (no
# network): a mismatch shows as an md5 error naming the file, and --checksums FILE overrides them.
# g2p-model-5 and librispeech-lm-corpus.tgz are in neither source: give their md5s with --checksums.
# Sizes are not recorded: openslr's page lists them rounded (34M, 1.3G); the disk-space check asks the
# server (Content-Length), as for any file whose size is not known.
LM_FILES = {
    f.name: f
    for f in (
        LmFile("3-gram.arpa.gz", "74cbb837e582378c26c602e1c8cbcb9c", "trigram ARPA, unpruned"),
        LmFile("3-gram.pruned.1e-7.arpa.gz", "9a0f1325bcaf3a0f7b7be4be10823c2a", "trigram ARPA, pruned 1e-7"),
        LmFile("3-gram.pruned.3e-7.arpa.gz", "8f67ec741827742eee05799ab7605b50", "trigram ARPA, pruned 3e-7"),
        LmFile("4-gram.arpa.gz", "6abdcd5b055bd482e4f9defe91d40408", "4-gram ARPA, unpruned"),
        LmFile("librispeech-vocab.txt", "bf3cc7a50112831ed8b0afa40cae96a5", "the 200,000-word vocabulary"),
        LmFile("librispeech-lexicon.txt", "28f72663f6bfed7cd346283c064c315b", "pronunciations of the vocabulary"),
        LmFile("librispeech-lm-norm.txt.gz", "c83c64c726a1aedfe65f80aa311de402", "the normalised LM training text"),
        LmFile("librispeech-lm-corpus.tgz", None, "the LM corpus, raw"),
        LmFile("g2p-model-5", None, "Sequitur G2P model"),
    )
}
# What `download_dataset.sh --lm` fetches: the LM beam search decoders usually take (tens of MB), and
# the vocabulary a KenLM binary made from it needs as --lexicon.
DEFAULT_LM_FILES = ("3-gram.pruned.1e-7.arpa.gz", "librispeech-vocab.txt")


def official_lm_md5s() -> dict[str, str]:
    """LM file name -> md5, for the files whose md5 is known here."""
    return {f.name: f.md5 for f in LM_FILES.values() if f.md5 is not None}


# ---------------------------------------------------------------- transcripts (<spk>-<chap>.trans.txt)


def transcript_file(chapter_dir) -> str:
    """The name of a chapter directory's transcript file: <spk>-<chap>.trans.txt."""
    chapter_dir = PurePosixPath(chapter_dir)
    return f"{chapter_dir.parent.name}-{chapter_dir.name}.trans.txt"


def read_transcripts(data: bytes, prefix: str, name: str) -> tuple[dict[str, str], list[str]]:
    """A trans.txt file's bytes -> ({utterance id: normalised transcript}, problems).

    Each line is '<id> <TRANSCRIPT>' (any white space after the id); every id must start with
    prefix ('<spk>-<chap>-'). Problems name `name`:line. The one parser for preparation, which stops
    at the first problem (it makes nothing of a bad chapter), and verification, which reports them
    all: both must read a file alike. A line with a bad character still gives its id (with the text
    as written), so that its FLAC is not also reported as lacking a transcript.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        return {}, [f"{name}: not UTF-8 (byte {data[err.start]:#04x} at offset {err.start})"]
    transcripts, problems = {}, []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split(None, 1)
        if not fields:
            continue
        uid, words = fields[0], fields[1] if len(fields) > 1 else ""
        if not uid.startswith(prefix) or not words.split():
            problems.append(f"{name}:{number}: expected '{prefix}NNNN TRANSCRIPT', got {line!r}")
            continue
        if uid in transcripts:
            problems.append(f"{name}:{number}: utterance {uid} listed twice")
            continue
        try:
            transcripts[uid] = labels.normalise(words)
            labels.check(transcripts[uid])
        except labels.UnknownCharacter as err:
            problems.append(f"utterance {uid} ({name}:{number}): {err}")
            transcripts[uid] = " ".join(words.split())
    return transcripts, problems
