"""The final 2018 MLPerf speech_recognition reference run (commit e91cec72, August 2018), exactly.

Its model is the listing: 3 unidirectional GRU layers of 2560, no BatchNorm between them
(103,841,568 parameters); trained with SGD (Nesterov momentum 0.9) at lr 1e-4 on batches of 8 in
length order, gradient-norm clip 400, lr / 1.1 after every epoch, fp32, with its loader's random tempo
[0.85, 1.15] and gain [-6, +8] dB per training utterance. By its own final commit it reached about
34 WER, never the target of 23.0.

This is history, not a valid run of this benchmark: its unidirectional model differs from the
benchmark's fixed bidirectional one, so pytorch/ds2_rules.yaml rejects its log (docs/recipe.md "What a
submitter may tune").
"""

OVERRIDES = dict(
    bidirectional=False,
    optimizer="sgd",
    lr=1e-4,
    momentum=0.9,
    weight_decay=0.0,
    max_norm=400.0,
    lr_schedule="anneal",
    learning_anneal=1.1,
    batch_size=8,
    gradient_accumulation_steps=1,
    precision="fp32",
    fp32_math="ieee",  # 2018 GPUs had no TF32
    max_duration=0.0,  # every training utterance, up to about 35 s
    shuffle_batches=False,  # ascending duration in every epoch
    tempo_perturb=True,
    tempo_low=0.85,
    tempo_high=1.15,
    gain_perturb=True,
    gain_low_db=-6.0,
    gain_high_db=8.0,
    spec_augment=False,
)
