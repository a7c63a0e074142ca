"""The embedded demo: the same architecture scaled down so a 2-core CPU trains it in minutes.

Tuned for the synthetic espeak-ng corpus of `make demo`; see README "Performance".
"""

OVERRIDES = dict(
    window_size=0.01,  # 81 bins instead of 161: about 40% less conv work
    conv_channels=16,
    hidden_size=256,
    hidden_layers=2,
    optimizer="adamw",
    lr=1.5e-3,
    lr_schedule="onecycle",
    batch_size=16,
    epochs=6,
    precision="bf16",
    shuffle_batches=True,
    train_manifest="train",
    val_manifest="val",
)
