"""Every hyperparameter of the DeepSpeech2 benchmark, with the 2018 reference's defaults.

Three ways to change a knob, applied in this order:
  1. edit the default below;
  2. pick a named preset (`preset=demo`), a plain-Python dict in presets/<name>.py;
  3. override on the command line: `./run_and_time.sh lr=3e-4 hidden_layers=5`.
Every value is checked once, before any work, and a wrong name, type or range is one error that
names the parameter.
"""

import dataclasses
import difflib
import importlib
import pkgutil
from dataclasses import dataclass

import presets


@dataclass(frozen=True)
class Params:
    # --- audio features (download_dataset.sh prepares them; training checks they match) ---
    sample_rate: int = 16000  # Hz; LibriSpeech is 16 kHz
    window_size: float = 0.02  # s; STFT window = FFT length (320 samples -> 161 bins)
    window_stride: float = 0.01  # s; STFT hop (160 samples)
    window: str = "hamming"  # STFT window function
    feature: str = "spectrogram"  # spectrogram: log1p |STFT| (the reference code); mfcc: its README's claim
    n_mels: int = 40  # mel bands under the cepstrum (feature=mfcc only)
    n_mfcc: int = 13  # cepstral coefficients kept (feature=mfcc only)
    # --- model: DeepSpeech2 as the reference lists it ---
    conv_channels: int = 32  # output channels of both conv layers
    rnn_type: str = "gru"  # recurrent cell of every layer of the stack
    hidden_size: int = 2560  # units per recurrent layer (and per direction)
    hidden_layers: int = 3  # recurrent layers in the stack
    bidirectional: bool = True  # both directions, summed (every later layer keeps hidden_size inputs)
    # --- optimisation ---
    optimizer: str = "sgd"  # sgd: SGD with Nesterov momentum (the reference) | adamw
    lr: float = 1e-4  # base learning rate (of the global batch)
    momentum: float = 0.9  # SGD momentum (Nesterov); AdamW beta1
    weight_decay: float = 0.0  # L2 (sgd) or decoupled (adamw) weight decay
    max_norm: float = 400.0  # clip the global gradient norm to this (0: no clipping)
    lr_schedule: str = (
        "anneal"  # anneal: lr /= learning_anneal after every epoch | onecycle: warm-up then cosine decay per step
    )
    learning_anneal: float = 1.1  # divisor of the lr after every epoch (lr_schedule=anneal)
    warmup_fraction: float = 0.15  # share of all steps spent warming up (lr_schedule=onecycle)
    batch_size: int = 8  # global batch: utterances per optimiser step, over all processes
    gradient_accumulation_steps: int = 1  # micro-batches per process per step; batch_size must divide evenly
    epochs: int = 10  # passes over the training set at most
    target_wer: float = 23.0  # stop once the validation corpus WER (%) is at or below this
    seed: int = 1  # seeds torch, numpy and python's random; the reference's run_and_time.sh used 1
    precision: str = "fp32"  # fp32 | bf16 | fp16 autocast for convs, RNNs and head; CTC stays fp32
    # --- data ---
    train_manifest: str = "train"  # manifests/<name>.jsonl trained on (train = the 3 train subsets)
    val_manifest: str = "val"  # manifests/<name>.jsonl evaluated after each epoch (val = dev-clean + dev-other)
    max_duration: float = 0.0  # s; skip longer training utterances (0: keep all, as the reference)
    shuffle_batches: bool = False  # False: length order every epoch (the reference); True: seeded shuffle of batches
    num_workers: int = 2  # DataLoader worker processes
    preset: str = ""  # named preset from presets/ applied under command-line overrides ("" = none)

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

    def feature_config(self) -> dict:
        """The knobs that define the stored features; a prepared dataset records these."""
        keys = ["feature", "sample_rate", "window_size", "window_stride", "window"]
        if self.feature == "mfcc":
            keys += ["n_mels", "n_mfcc"]
        return {k: getattr(self, k) for k in keys} | {"n_features": self.n_features}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CHOICES = {
    "window": ("hamming", "hann", "blackman", "bartlett"),
    "feature": ("spectrogram", "mfcc"),
    "rnn_type": ("gru", "lstm", "rnn"),
    "optimizer": ("sgd", "adamw"),
    "lr_schedule": ("anneal", "onecycle"),
    "precision": ("fp32", "bf16", "fp16"),
}

# name -> (lowest, highest, lowest is allowed)
RANGES = {
    "sample_rate": (1000, 192000, True),
    "window_size": (0.0, 1.0, False),
    "window_stride": (0.0, 1.0, False),
    "n_mels": (1, 512, True),
    "n_mfcc": (1, 512, True),
    "conv_channels": (1, 4096, True),
    "hidden_size": (1, 16384, True),
    "hidden_layers": (1, 64, True),
    "lr": (0.0, 10.0, False),
    "momentum": (0.0, 1.0, True),
    "weight_decay": (0.0, 1.0, True),
    "max_norm": (0.0, 1e9, True),
    "learning_anneal": (1.0, 100.0, True),
    "warmup_fraction": (0.0, 1.0, True),
    "batch_size": (1, 1 << 20, True),
    "gradient_accumulation_steps": (1, 1 << 20, True),
    "epochs": (1, 10000, True),
    "target_wer": (0.0, 100.0, True),
    "seed": (0, 2**32 - 1, True),
    "max_duration": (0.0, 1e6, True),
    "num_workers": (0, 256, True),
}


class ParamError(ValueError):
    """A wrong parameter name, type, range or combination."""


FIELDS = {f.name: f for f in dataclasses.fields(Params)}


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


def _check(p: Params) -> None:
    for name, options in CHOICES.items():
        if getattr(p, name) not in options:
            raise ParamError(f"{name}={getattr(p, name)!r}: must be one of {', '.join(options)}")
    for name, (low, high, low_ok) in RANGES.items():
        value = getattr(p, name)
        kind = FIELDS[name].type
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (kind is int and not isinstance(value, int))
        ):
            raise ParamError(f"{name}={value!r}: expected a value of type {kind.__name__}")
        if not (value >= low if low_ok else value > low) or value > high or value != value:
            bound = "[" if low_ok else "("
            raise ParamError(f"{name}={value!r}: out of range {bound}{low}, {high}]")
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
    if p.batch_size % p.gradient_accumulation_steps:
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
    values = (load_preset(preset) if preset else {}) | overrides
    try:
        p = Params(**values)
    except TypeError as err:  # pragma: no cover - names are checked above
        raise ParamError(str(err)) from None
    _check(p)
    return p


def parse(args: list[str]) -> Params:
    """Params from command-line words `key=value`."""
    overrides = {}
    for arg in args:
        if "=" not in arg:
            raise ParamError(f"{arg!r}: parameters are given as key=value (e.g. lr=3e-4)")
        name, text = arg.split("=", 1)
        name = name.strip()
        if name not in FIELDS:
            raise ParamError(_unknown(name))
        overrides[name] = _convert(name, text)
    return make(overrides)


def _unknown(name: str) -> str:
    close = difflib.get_close_matches(name, FIELDS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(FIELDS)}"
    return f"unknown parameter {name!r}{hint}"


def describe(p: Params) -> str:
    """One line per parameter, marking those that differ from the default."""
    lines = []
    for name, field in FIELDS.items():
        value = getattr(p, name)
        mark = "" if value == field.default else "   (default " + repr(field.default) + ")"
        lines.append(f"  {name:28s} = {value!r}{mark}")
    return "\n".join(lines)
