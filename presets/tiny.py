"""A model small enough to train a few steps in a test: the reference's shape, shrunk."""

OVERRIDES = dict(
    window_size=0.01,  # 81 bins
    conv_channels=4,
    hidden_size=16,
    hidden_layers=1,
    batch_size=4,
    epochs=2,
    num_workers=0,
    precision="fp32",  # exact comparisons between runs are simplest to read in fp32
    tempo_perturb=False,  # the tests of augmentation turn it on themselves
    gain_perturb=False,
)
