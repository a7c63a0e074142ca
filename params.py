"""Every hyperparameter of the DeepSpeech2 benchmark: the reference's model, features and target, and
the benchmark's default training recipe (docs/recipe.md "The default recipe": each choice with its reason).

The fixed knobs (rule=FIXED) define the benchmark: a valid run keeps their defaults, and the MLPerf
rules file (pytorch/ds2_rules.yaml, generated from this file) rejects a log where one differs. The
tunable ones are the submitter's. The final 2018 reference run is `preset=reference2018`.

Three ways to change a knob, applied in this order:
  1. edit the default below;
  2. pick a named preset (`preset=demo`), a plain-Python dict in presets/<name>.py;
  3. override on the command line: `./run_and_time.sh lr=3e-4 hidden_layers=5`.
Every value is checked once, before any work, and a wrong name, type or range is one error that
names the parameter.
"""

import argparse
import dataclasses
import difflib
import importlib
import pkgutil
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import presets
from exit_status import UsageError

# The groups of knobs, in the order params.py lists them.
FEATURES, MODEL, OPTIMIZER, SCHEDULE, BATCH, PRECISION, DATA, AUGMENTATION, RUN = GROUPS = (
    "features",
    "model",
    "optimizer",
    "schedule",
    "batch",
    "precision",
    "data",
    "augmentation",
    "run",
)
# The benchmark's rules: a fixed knob defines the benchmark (a valid run keeps its default); a
# tunable one is the submitter's to choose (docs/recipe.md "What a submitter may tune"); a run knob is chosen
# per run and is not a hyperparameter.
FIXED, TUNABLE, PER_RUN = "fixed", "tunable", "run"
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"  # a file-name stem: no directory, no '..'


@dataclass(frozen=True)
class Knob:
    """What params.py knows of a parameter besides its default: everything else derives from it."""

    group: str
    help: str
    rule: str = TUNABLE
    choices: tuple = ()
    range: tuple[float, float] | None = None  # [low, high], inclusive unless low_open
    low_open: bool = False
    pattern: str = ""  # a str value must match it whole
    when: tuple[str, object] | None = None  # (knob, value): this knob matters only then


def knob(default, group: str, help: str, **kwargs):
    return dataclasses.field(default=default, metadata={"knob": Knob(group, help, **kwargs)})


@dataclass(frozen=True)
class Params:
    # --- audio features (download_dataset.sh prepares them; training checks they match) ---
    sample_rate: int = knob(16000, FEATURES, "Hz; LibriSpeech is 16 kHz", rule=FIXED, range=(1000, 192000))
    window_size: float = knob(
        0.02,
        FEATURES,
        "s; STFT window = FFT length (320 samples -> 161 bins)",
        rule=FIXED,
        range=(0.0, 1.0),
        low_open=True,
    )
    window_stride: float = knob(
        0.01, FEATURES, "s; STFT hop (160 samples)", rule=FIXED, range=(0.0, 1.0), low_open=True
    )
    window: str = knob(
        "hamming", FEATURES, "STFT window function", rule=FIXED, choices=("hamming", "hann", "blackman", "bartlett")
    )
    feature: str = knob(
        "spectrogram",
        FEATURES,
        "spectrogram: log1p |STFT| (the reference code); mfcc: its README",
        rule=FIXED,
        choices=("spectrogram", "mfcc"),
    )
    n_mels: int = knob(
        40, FEATURES, "mel bands under the cepstrum", rule=FIXED, range=(1, 512), when=("feature", "mfcc")
    )
    n_mfcc: int = knob(13, FEATURES, "cepstral coefficients kept", rule=FIXED, range=(1, 512), when=("feature", "mfcc"))
    # --- model: DeepSpeech2 as the reference lists it ---
    conv_channels: int = knob(32, MODEL, "output channels of both conv layers", rule=FIXED, range=(1, 4096))
    rnn_type: str = knob("gru", MODEL, "recurrent cell of every layer", rule=FIXED, choices=("gru", "lstm", "rnn"))
    hidden_size: int = knob(2560, MODEL, "units per recurrent layer (and per direction)", rule=FIXED, range=(1, 16384))
    hidden_layers: int = knob(3, MODEL, "recurrent layers in the stack", rule=FIXED, range=(1, 64))
    bidirectional: bool = knob(
        True, MODEL, "both directions, summed (later layers keep hidden_size inputs)", rule=FIXED
    )
    # --- optimisation ---
    optimizer: str = knob(
        "adamw", OPTIMIZER, "adamw | sgd: SGD with Nesterov momentum (the 2018 reference)", choices=("sgd", "adamw")
    )
    lr: float = knob(
        1e-3,
        OPTIMIZER,
        "peak learning rate of the global batch; for another batch_size B, adamw: lr x sqrt(B / 256)",
        range=(0.0, 10.0),
        low_open=True,
    )
    momentum: float = knob(0.9, OPTIMIZER, "SGD momentum (Nesterov); AdamW beta1; below 1", range=(0.0, 1.0))
    weight_decay: float = knob(1e-3, OPTIMIZER, "L2 (sgd) or decoupled (adamw) weight decay", range=(0.0, 1.0))
    max_norm: float = knob(400.0, OPTIMIZER, "clip the global gradient norm to this (0: no clipping)", range=(0.0, 1e9))
    lr_schedule: str = knob(
        "onecycle",
        SCHEDULE,
        "anneal: lr /= learning_anneal every epoch | onecycle: warm-up, then cosine decay per step",
        choices=("anneal", "onecycle"),
    )
    learning_anneal: float = knob(
        1.1, SCHEDULE, "divisor of the lr after every epoch", range=(1.0, 100.0), when=("lr_schedule", "anneal")
    )
    warmup_fraction: float = knob(
        0.15, SCHEDULE, "share of all steps spent warming up", range=(0.0, 1.0), when=("lr_schedule", "onecycle")
    )
    epochs: int = knob(10, SCHEDULE, "passes over the training set at most", rule=FIXED, range=(1, 10000))
    target_wer: float = knob(
        23.0, SCHEDULE, "stop once the validation corpus WER (%) is at or below this", rule=FIXED, range=(0.0, 100.0)
    )
    batch_size: int = knob(
        256, BATCH, "global batch: utterances per optimiser step, over all processes", range=(1, 1 << 20)
    )
    gradient_accumulation_steps: int = knob(
        0,
        BATCH,
        "micro-batches per process per step (batch_size divides evenly); 0: the fewest that keep each "
        "micro-batch within micro_batch_size",
        range=(0, 1 << 20),
    )
    micro_batch_size: int = knob(
        32,
        BATCH,
        "most utterances a process runs forward at once (sizes gradient_accumulation_steps=0)",
        range=(1, 1 << 20),
        when=("gradient_accumulation_steps", 0),
    )
    precision: str = knob(
        "bf16",
        PRECISION,
        "fp32 | bf16 | fp16 for convs, RNNs and head; CTC stays fp32",
        choices=("fp32", "bf16", "fp16"),
    )
    fp32_math: str = knob(
        "ieee", PRECISION, "CUDA fp32 matmuls, convolutions and RNNs: ieee (true fp32) | tf32", choices=("ieee", "tf32")
    )
    allow_native_rnn: bool = knob(
        False,
        PRECISION,
        "CUDA: train even where the recurrent layers would fall back from cuDNN to ATen's slower per-step loop",
    )
    # --- data ---
    train_manifest: str = knob(
        "train",
        DATA,
        "manifests/<name>.jsonl trained on (train = the 3 train subsets)",
        rule=FIXED,
        pattern=NAME_PATTERN,
    )
    val_manifest: str = knob(
        "val",
        DATA,
        "manifests/<name>.jsonl evaluated every epoch (dev-clean + dev-other)",
        rule=FIXED,
        pattern=NAME_PATTERN,
    )
    max_duration: float = knob(
        0.0,
        DATA,
        "s; leave out longer training utterances (0: none). Fixed at 0: every training utterance is examined "
        "every epoch, and the rules hold train_samples to the whole set's 281,241",
        rule=FIXED,
        range=(0.0, 1e6),
    )
    normalization: str = knob(
        "utterance",
        DATA,
        "how the loader normalises stored features: utterance (the reference: one mean and std over each "
        "utterance) | global (per-bin mean and std of the training set, recorded by data.prepare and kept "
        "in the checkpoint; what streaming needs)",
        rule=FIXED,
        choices=("utterance", "global"),
    )
    shuffle_batches: bool = knob(
        True, DATA, "True: seeded shuffle of the length-ordered batches; False: length order every epoch (2018)"
    )
    num_workers: int = knob(
        4,
        DATA,
        "DataLoader worker processes per rank (docs/recipe.md, Augmentation: ~2.3 cores feed one GPU)",
        range=(0, 256),
    )
    # --- augmentation of training utterances (never of evaluation), per (seed, epoch, utterance) ---
    tempo_perturb: bool = knob(True, AUGMENTATION, "random tempo change (the reference: sox tempo)")
    tempo_low: float = knob(0.85, AUGMENTATION, "lowest tempo factor", range=(0.5, 2.0), when=("tempo_perturb", True))
    tempo_high: float = knob(1.15, AUGMENTATION, "highest tempo factor", range=(0.5, 2.0), when=("tempo_perturb", True))
    gain_perturb: bool = knob(True, AUGMENTATION, "random gain (the reference: sox gain)")
    gain_low_db: float = knob(-6.0, AUGMENTATION, "lowest gain (dB)", range=(-60.0, 60.0), when=("gain_perturb", True))
    gain_high_db: float = knob(8.0, AUGMENTATION, "highest gain (dB)", range=(-60.0, 60.0), when=("gain_perturb", True))
    spec_augment: bool = knob(False, AUGMENTATION, "SpecAugment frequency and time masks")
    freq_masks: int = knob(2, AUGMENTATION, "frequency masks per utterance", range=(0, 16), when=("spec_augment", True))
    freq_mask_width: int = knob(
        27, AUGMENTATION, "widest frequency mask (bins)", range=(0, 1024), when=("spec_augment", True)
    )
    time_masks: int = knob(2, AUGMENTATION, "time masks per utterance", range=(0, 64), when=("spec_augment", True))
    time_mask_width: int = knob(
        100, AUGMENTATION, "widest time mask (frames)", range=(0, 100000), when=("spec_augment", True)
    )
    # --- the run ---
    seed: int = knob(
        1,
        RUN,
        "seeds torch, numpy and python's random; the reference's run_and_time.sh used 1",
        rule=PER_RUN,
        range=(0, 2**32 - 1),
    )
    dist_timeout_s: float = knob(
        1800.0,
        RUN,
        "s a rank waits for the others in a collective before the run stops with an error (a hung rank)",
        rule=PER_RUN,
        range=(1.0, 86400.0),
    )
    preset: str = knob(
        "",
        RUN,
        "named preset from presets/ applied under command-line overrides ('' = none)",
        rule=PER_RUN,
        pattern=f"|{NAME_PATTERN}",
    )

    @property
    def n_fft(self) -> int:
        return round(self.window_size * self.sample_rate)

    @property
    def hop_length(self) -> int:
        return round(self.window_stride * self.sample_rate)

    @property
    def n_features(self) -> int:
        """Feature bins per frame: n_fft // 2 + 1 for the spectrogram, n_mfcc for MFCCs."""
        return self.n_fft // 2 + 1 if self.feature == "spectrogram" else self.n_mfcc

    def accumulation_steps(self, world_size: int) -> int:
        """Micro-batches per process per optimiser step at this world size: gradient_accumulation_steps,
        or where it is 0, the fewest that keep each micro-batch within micro_batch_size utterances
        (so the default recipe's global batch of 256 is 8 x 32 on one GPU and 1 x 32 on eight)."""
        if self.gradient_accumulation_steps:
            return self.gradient_accumulation_steps
        return max(1, -(-self.batch_size // (world_size * self.micro_batch_size)))

    def micro_batch(self, world_size: int) -> int:
        """The most utterances one process runs forward at once at this world size (training, and
        validation, which uses the same size so that a large global batch never reaches one device)."""
        return -(-self.batch_size // (world_size * self.accumulation_steps(world_size)))

    def applies(self, name: str) -> bool:
        """Whether knob `name` matters under the other knobs' values (n_mfcc only for feature=mfcc, ...)."""
        when = KNOBS[name].when
        return when is None or getattr(self, when[0]) == when[1]

    def group(self, group: str) -> dict:
        """{name: value} of the knobs of one group that apply."""
        return {name: getattr(self, name) for name, k in KNOBS.items() if k.group == group and self.applies(name)}

    def feature_config(self) -> dict:
        """The knobs that define the stored features; a prepared dataset records these."""
        return self.group(FEATURES) | {"n_features": self.n_features}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(Params)}
KNOBS: dict[str, Knob] = {name: f.metadata["knob"] for name, f in FIELDS.items()}


def choices(name: str) -> tuple:
    """The allowed values of a knob (for command-line options that take the same values)."""
    return KNOBS[name].choices


class ParamError(UsageError, ValueError):
    """A wrong parameter name, type, range or combination (exit status 2)."""


def available_presets() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(presets.__path__))


def load_preset(name: str) -> dict:
    if name not in available_presets():
        raise ParamError(f"preset={name!r}: no such preset; available: {', '.join(available_presets())}")
    overrides = importlib.import_module(f"presets.{name}").OVERRIDES
    unknown = [key for key in overrides if key not in FIELDS or key == "preset"]
    if unknown:
        raise ParamError(f"presets/{name}.py sets unknown parameter(s): {', '.join(unknown)}")
    return dict(overrides)


def _convert(name: str, text: str):
    kind = FIELDS[name].type
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        return text
    except ValueError:
        raise ParamError(f"{name}={text!r}: expected a value of type {kind.__name__}") from None


def _check_knob(name: str, value) -> None:
    """The value's type, choices, range and pattern, as its Knob says."""
    k, kind = KNOBS[name], FIELDS[name].type
    numeric = kind in (int, float)
    wrong_type = isinstance(value, bool) != (kind is bool) or (
        not isinstance(value, (int, float)) if numeric else not isinstance(value, kind)
    )
    if wrong_type or (kind is int and not isinstance(value, int)):
        raise ParamError(f"{name}={value!r}: expected a value of type {kind.__name__}")
    if k.choices and value not in k.choices:
        raise ParamError(f"{name}={value!r}: must be one of {', '.join(map(str, k.choices))}")
    if k.pattern and not re.fullmatch(k.pattern, value):
        raise ParamError(f"{name}={value!r}: must be a plain name (letters, digits, '_', '.', '-'; no directory)")
    if numeric and k.range is not None:
        low, high = k.range
        if not (value > low if k.low_open else value >= low) or value > high or value != value:
            raise ParamError(f"{name}={value!r}: out of range {'(' if k.low_open else '['}{low}, {high}]")


def _check(p: Params) -> None:
    for name in FIELDS:
        _check_knob(name, getattr(p, name))
    for name in ("window_size", "window_stride"):
        samples = getattr(p, name) * p.sample_rate
        if abs(samples - round(samples)) > 1e-6:
            raise ParamError(
                f"{name}={getattr(p, name)}: must be a whole number of samples at sample_rate={p.sample_rate}"
            )
    if p.hop_length > p.n_fft:
        raise ParamError(f"window_stride={p.window_stride}: must not exceed window_size={p.window_size}")
    if p.feature == "mfcc" and p.n_mfcc > p.n_mels:
        raise ParamError(f"n_mfcc={p.n_mfcc}: must not exceed n_mels={p.n_mels}")
    if p.momentum >= 1:
        raise ParamError(f"momentum={p.momentum}: must be below 1 (SGD diverges; AdamW's beta1 must be < 1)")
    for low, high in (("tempo_low", "tempo_high"), ("gain_low_db", "gain_high_db")):
        if p.applies(low) and getattr(p, low) > getattr(p, high):
            raise ParamError(f"{low}={getattr(p, low)}: must not exceed {high}={getattr(p, high)}")
    if p.gradient_accumulation_steps and p.batch_size % p.gradient_accumulation_steps:
        raise ParamError(
            f"batch_size={p.batch_size}: must be divisible by "
            f"gradient_accumulation_steps={p.gradient_accumulation_steps}"
        )


def make(overrides: dict | None = None) -> Params:
    """Params from a {name: value} dict of typed values (preset first, then the rest)."""
    overrides = dict(overrides or {})
    for name in overrides:
        if name not in FIELDS:
            raise ParamError(_unknown(name))
    preset = overrides.get("preset", "")
    if preset:
        _check_knob("preset", preset)
    values = (load_preset(preset) if preset else {}) | overrides
    p = Params(**values)
    _check(p)
    return p


def parse(args: list[str]) -> Params:
    """Params from command-line words `key=value`; a name given twice is an error (which would win?)."""
    overrides = {}
    for arg in args:
        if "=" not in arg:
            raise ParamError(f"{arg!r}: parameters are given as key=value (e.g. lr=3e-4)")
        name, text = arg.split("=", 1)
        name = name.strip()
        if name not in FIELDS:
            raise ParamError(_unknown(name))
        if name in overrides:
            raise ParamError(f"{name}: given twice ({name}={overrides[name]!r} and {arg!r}); give each parameter once")
        overrides[name] = _convert(name, text)
    return make(overrides)


def _unknown(name: str) -> str:
    close = difflib.get_close_matches(name, FIELDS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(FIELDS)}"
    return f"unknown parameter {name!r}{hint}"


def describe(p: Params) -> str:
    """One line per parameter, grouped, marking those that differ from the default."""
    lines = []
    for group in GROUPS:
        lines.append(f"  [{group}]")
        for name, k in KNOBS.items():
            if k.group == group:
                value, default = getattr(p, name), FIELDS[name].default
                mark = "" if value == default else f"   (default {default!r})"
                lines.append(f"  {name:28s} = {value!r}{mark}")
    return "\n".join(lines)


# ---------------------------------------------------------------- the parameter table of the docs

DOCS_TABLE = Path(__file__).resolve().parent / "docs" / "parameters.md"
RULE_WORDS = {FIXED: "fixed", TUNABLE: "tunable", PER_RUN: "per run"}


def _allowed(name: str) -> str:
    k, kind = KNOBS[name], FIELDS[name].type
    if k.choices:
        return " \\| ".join(f"`{c}`" for c in k.choices)
    if k.range is not None:
        low, high = k.range
        return f"{'(' if k.low_open else '['}{low:g}, {high:g}]"
    if k.pattern:
        return "a plain name"
    return kind.__name__


def markdown_table() -> str:
    """docs/parameters.md: every knob with its group, rule, default, allowed values and meaning."""
    lines = [
        "<!-- GENERATED by `python -m params --write-docs` from params.py: do not edit (a test checks it). -->",
        "# Parameters",
        "",
        "Every knob of [params.py](../params.py). *fixed* knobs define the benchmark (a valid run keeps the",
        "default; pytorch/ds2_rules.yaml rejects a log where one differs), *tunable* ones are the submitter's,",
        "*per run* ones are chosen per run. Set one on the command line (`./run_and_time.sh lr=3e-4`) or with a",
        f"preset (`preset=NAME`, presets/: {', '.join(available_presets())}); `python -m pytorch.train --help`",
        "lists them with their current values. A knob marked *when* matters only under that other knob's value.",
    ]
    for group in GROUPS:
        lines += ["", f"## {group}", "", "| name | rule | default | allowed | meaning |", "|---|---|---|---|---|"]
        for name, k in KNOBS.items():
            if k.group == group:
                when = f" (when {k.when[0]}={k.when[1]!r})" if k.when else ""
                default = FIELDS[name].default
                meaning = k.help.replace("|", "\\|") + when  # a | would end the table's cell
                lines.append(f"| `{name}` | {RULE_WORDS[k.rule]} | `{default!r}` | {_allowed(name)} | {meaning} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m params", description="The parameters' table of the docs.")
    parser.add_argument(
        "--write-docs", action="store_true", help=f"rewrite {DOCS_TABLE.relative_to(DOCS_TABLE.parents[1])}"
    )
    args = parser.parse_args(argv)
    if not args.write_docs:
        print(markdown_table(), end="")
        return 0
    DOCS_TABLE.parent.mkdir(exist_ok=True)
    DOCS_TABLE.write_text(markdown_table())
    print(f"wrote {DOCS_TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
