import pytest

import params


def test_fixed_defaults_are_the_references():
    p = params.make()
    assert (p.sample_rate, p.n_fft, p.hop_length, p.window, p.n_features) == (16000, 320, 160, "hamming", 161)
    assert (p.rnn_type, p.hidden_size, p.hidden_layers, p.bidirectional) == ("gru", 2560, 3, True)
    assert (p.epochs, p.target_wer, p.seed, p.train_manifest, p.val_manifest) == (10, 23.0, 1, "train", "val")


def test_the_default_recipe_is_the_documented_one():  # docs/recipe.md
    p = params.make()
    assert (p.optimizer, p.lr, p.momentum, p.weight_decay, p.max_norm) == ("adamw", 1e-3, 0.9, 1e-3, 400.0)
    assert (p.lr_schedule, p.warmup_fraction, p.batch_size, p.micro_batch_size) == ("onecycle", 0.15, 256, 32)
    assert (p.precision, p.max_duration, p.shuffle_batches) == ("bf16", 0.0, True)
    assert (p.tempo_perturb, p.gain_perturb, p.spec_augment) == (True, True, False)


@pytest.mark.parametrize("world_size, steps", [(1, 8), (2, 4), (3, 3), (8, 1), (16, 1)])
def test_accumulation_keeps_micro_batches_within_micro_batch_size(world_size, steps):
    p = params.make()  # 256 utterances, at most 32 per micro-batch
    assert p.accumulation_steps(world_size) == steps
    assert p.batch_size / (world_size * steps) <= p.micro_batch_size
    assert params.make({"gradient_accumulation_steps": 2}).accumulation_steps(world_size) == 2


def test_reference2018_is_the_final_2018_run():
    p = params.make({"preset": "reference2018"})
    assert (p.bidirectional, p.optimizer, p.lr, p.momentum, p.batch_size, p.max_norm) == (
        False,
        "sgd",
        1e-4,
        0.9,
        8,
        400.0,
    )
    assert (p.lr_schedule, p.learning_anneal, p.precision, p.max_duration, p.shuffle_batches) == (
        "anneal",
        1.1,
        "fp32",
        0.0,
        False,
    )
    assert (p.tempo_low, p.tempo_high, p.gain_low_db, p.gain_high_db) == (0.85, 1.15, -6.0, 8.0)
    assert p.tempo_perturb and p.gain_perturb and not p.spec_augment and p.accumulation_steps(1) == 1


def test_overrides_are_typed():
    p = params.parse(["lr=3e-4", "hidden_layers=5", "bidirectional=false", "rnn_type=lstm"])
    assert p.lr == 3e-4 and p.hidden_layers == 5 and p.bidirectional is False and p.rnn_type == "lstm"


def test_preset_then_command_line():
    p = params.parse(["lr=0.01", "preset=demo"])
    demo = params.load_preset("demo")
    assert p.hidden_size == demo["hidden_size"] and p.lr == 0.01


def test_mfcc_features():
    p = params.parse(["feature=mfcc", "n_mfcc=20"])
    assert p.n_features == 20 and p.feature_config()["n_mels"] == 40


@pytest.mark.parametrize(
    "args, message",
    [
        (["hiden_size=3"], "unknown parameter 'hiden_size'; did you mean 'hidden_size'?"),
        (["lr=fast"], "lr='fast': expected a value of type float"),
        (["epochs=2.5"], "epochs='2.5': expected a value of type int"),
        (["bidirectional=maybe"], "bidirectional='maybe'"),
        (["lr=0"], "lr=0.0: out of range"),
        (["momentum=1.5"], "momentum=1.5: out of range"),
        (["optimizer=adamw", "momentum=1"], "momentum=1.0: must be below 1"),
        (["rnn_type=transformer"], "rnn_type='transformer': must be one of gru, lstm, rnn"),
        (["preset=huge"], "preset='huge': no such preset"),
        (["window_size=0.0123"], "window_size=0.0123: must be a whole number of samples"),
        (["batch_size=6", "gradient_accumulation_steps=4"], "batch_size=6: must be divisible"),
        (["lr"], "'lr': parameters are given as key=value"),
        (["feature=mfcc", "n_mfcc=50"], "n_mfcc=50: must not exceed n_mels=40"),
        (["lr=1e-3", "lr=2e-3"], "lr: given twice (lr=0.001 and 'lr=2e-3')"),
        (["train_manifest=../../etc/passwd"], "train_manifest='../../etc/passwd': must be a plain name"),
        (["val_manifest=/abs/val"], "val_manifest='/abs/val': must be a plain name"),
        (["preset=../demo"], "preset='../demo': must be a plain name"),
    ],
)
def test_bad_params_name_the_parameter(args, message):
    with pytest.raises(params.ParamError) as err:
        params.parse(args)
    assert message in str(err.value)


def test_every_preset_is_valid_and_trainable():
    import torch

    from pytorch import preflight
    from pytorch.model import DeepSpeech2

    for name in params.available_presets():
        p = params.parse([f"preset={name}"])
        preflight.check_trainable(p)
        with torch.device("meta"):  # the shapes only: full-size presets build in milliseconds
            DeepSpeech2(p)


def test_every_knob_says_its_group_rule_and_help():
    for name, knob in params.KNOBS.items():
        assert knob.group in params.GROUPS and knob.rule in (params.FIXED, params.TUNABLE, params.PER_RUN), name
        assert knob.help, name
        if knob.when is not None:
            assert knob.when[0] in params.KNOBS, name


def test_feature_config_is_the_features_group_that_applies():
    assert set(params.make().feature_config()) == {
        "sample_rate", "window_size", "window_stride", "window", "feature", "n_features"
    }  # fmt: skip
    assert {"n_mels", "n_mfcc"} <= set(params.parse(["feature=mfcc"]).feature_config())


def test_a_bad_parameter_exits_2_with_one_error_line(capsys):
    import exit_status

    assert exit_status.run(lambda: params.parse(["hiden_size=3"])) == exit_status.ExitStatus.USAGE
    assert capsys.readouterr().err == "error: unknown parameter 'hiden_size'; did you mean 'hidden_size'?\n"


def test_describe_marks_changes():
    text = params.describe(params.parse(["lr=0.5"]))
    assert "lr" in text and "(default 0.001)" in text


def test_the_docs_parameter_table_is_generated_from_params_py():
    """docs/parameters.md is `python -m params --write-docs`'s output: a knob added, renamed or
    changed in params.py without rewriting it fails here."""
    assert params.DOCS_TABLE.read_text() == params.markdown_table(), "run: python -m params --write-docs"
    for name in params.KNOBS:
        assert f"| `{name}` |" in params.markdown_table()
