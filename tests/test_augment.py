"""pytorch.augment and how the loader applies it: to training items only, the same for every
process, worker and resumed run, per (seed, epoch, utterance). Multi-process and resume equality of
whole runs with augmentation: tests/test_run_and_time.py and tests/test_train.py (parametrized)."""

import math

import numpy as np
import pytest
import torch

import params
from data.features import extract
from exit_status import ExitStatus
from pytorch import augment, distributed, evaluate, inference, loader, memory, train
from tests import corpus, trainer_fixtures

ALL_ON = ["preset=tiny", "tempo_perturb=true", "gain_perturb=true", "spec_augment=true"]
ALL_OFF = ["preset=tiny", "tempo_perturb=false", "gain_perturb=false", "spec_augment=false"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return trainer_fixtures.write_dataset(tmp_path_factory.mktemp("data"))


def training_split(data_dir, *words) -> loader.Split:
    return loader.open_training_split(data_dir, params.parse(list(words)))


def all_features(split: loader.Split, epoch: int | None) -> dict[str, torch.Tensor]:
    return {item.id: item.features for item in (split.dataset[(i, epoch)] for i in range(len(split)))}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- the functions


@pytest.mark.parametrize("db", [-6.0, -1.5, 3.0, 8.0])
def test_gain_of_the_features_is_the_features_of_the_gained_waveform(db):
    waveform = torch.from_numpy(corpus.utterance_audio(np.random.default_rng(0), 1.0))
    p = params.make()
    scaled = extract(waveform * augment.amplitude(db), p).T
    assert torch.allclose(augment.gain(extract(waveform, p).T, db), scaled, atol=2e-5)
    mfcc = params.make({"feature": "mfcc"})
    scaled = extract(waveform * augment.amplitude(db), mfcc).T
    assert torch.allclose(augment.mfcc_gain(extract(waveform, mfcc).T, db, mfcc.n_mels), scaled, atol=2e-4)
    assert augment.amplitude(20.0) == pytest.approx(10.0) and augment.amplitude(-6.0) == pytest.approx(0.501, abs=1e-3)


@pytest.mark.parametrize("factor", [0.85, 1.0, 1.15, 0.5])
def test_tempo_resamples_the_frames_linearly_at_the_tempo(factor):
    frames = 101
    ramp = torch.arange(frames, dtype=torch.float32).repeat(3, 1) * 0.01  # (3, T): value = 0.01 x frame
    out = augment.tempo(ramp, factor)
    assert out.shape == (3, round(frames / factor))
    # Linear interpolation is exact on a ramp: output frame j sits at input frame j * factor (held at the end).
    expected = 0.01 * torch.clamp(torch.arange(out.shape[1], dtype=torch.float32) * factor, max=frames - 1)
    assert torch.allclose(out, expected.repeat(3, 1), atol=1e-5)
    if factor == 1.0:
        assert torch.equal(out, ramp)


def test_stretched_frames_never_exceed_what_the_memory_check_sizes(data_dir):
    for frames in range(1, 3000):
        assert augment.stretched_frames(frames, 0.85) <= math.ceil(frames / 0.85)
        assert augment.stretched_frames(frames, 1.15) >= 1
    slowest = ["preset=tiny", "tempo_perturb=true", "tempo_low=0.8", "tempo_high=0.8", "batch_size=1"]
    split = training_split(data_dir, *slowest)
    _, bound = memory.largest_micro_batch(split, params.parse(slowest), distributed.single("cpu"))
    longest = max(f.shape[1] for f in all_features(split, 0).values())
    assert longest == round(int(split.manifest.frames.max()) / 0.8) and bound - 1 <= longest <= bound


def test_masks_are_zero_bands_and_spans_within_their_widths():
    ones = torch.ones(81, 200)
    assert torch.equal(augment.mask(ones, np.random.default_rng(0), 2, 0, 2, 0), ones)
    widest_span = math.floor(augment.MAX_TIME_MASK_FRACTION * 200)  # 40 frames, below time_mask_width=100
    masked_bins, masked_frames = [], []
    for seed in range(50):
        out = augment.mask(ones, np.random.default_rng(seed), 2, 27, 2, 100)
        bins = torch.all(out == 0, dim=1)  # a frequency mask zeroes whole rows
        frames = torch.all(out == 0, dim=0)
        assert torch.all((out == 0) == (bins[:, None] | frames[None, :]))  # nothing else is touched
        assert torch.all(out[out != 0] == 1)
        masked_bins.append(int(bins.sum()))
        masked_frames.append(int(frames.sum()))
    assert max(masked_bins) <= 2 * 27 and max(masked_frames) <= 2 * widest_span
    assert max(masked_bins) > 27 and max(masked_frames) > widest_span // 2  # the draws do reach wide masks


# ---------------------------------------------------------------- determinism


def test_augmented_features_depend_on_seed_epoch_and_utterance_only(data_dir):
    first, again = training_split(data_dir, *ALL_ON), training_split(data_dir, *ALL_ON)
    epoch0 = all_features(first, 0)
    assert same(epoch0, all_features(again, 0))
    assert same(epoch0, all_features(first, 0))  # the dataset keeps no state between draws
    plain = all_features(training_split(data_dir, *ALL_OFF), None)
    assert all(not torch.equal(epoch0[k], plain[k]) if epoch0[k].shape == plain[k].shape else True for k in plain)
    assert any(epoch0[k].shape != plain[k].shape for k in plain)  # tempo changed some lengths
    for other in (all_features(first, 1), all_features(training_split(data_dir, *ALL_ON, "seed=2"), 0)):
        changed = [k for k in plain if other[k].shape != epoch0[k].shape or not torch.equal(other[k], epoch0[k])]
        assert len(changed) == len(plain)


def test_the_draws_follow_the_utterance_not_its_row(data_dir):
    split = training_split(data_dir, *ALL_ON)
    everything = all_features(split, 3)
    # Rows renumbered (as max_duration or another split's merge does): the same utterances get the same draws.
    later_rows = split.manifest.select(np.arange(len(split) - 1, 2, -1))
    renumbered = loader.Split(
        "train", later_rows, loader.UtteranceDataset(data_dir, later_rows, split.dataset.augmentation)
    )
    kept = all_features(renumbered, 3)
    assert 0 < len(kept) < len(everything)
    assert same(kept, {k: everything[k] for k in kept})
    shorter = all_features(training_split(data_dir, *ALL_ON, f"max_duration={split.manifest.duration.max() - 0.01}"), 3)
    assert 0 < len(shorter) < len(everything) and same(shorter, {k: everything[k] for k in shorter})


def test_each_augmentation_has_its_own_draws(data_dir):
    """Turning SpecAugment on does not change the tempo and gain that each utterance gets."""
    without_masks = all_features(training_split(data_dir, *ALL_ON[:-1], "spec_augment=false"), 0)
    with_masks = all_features(training_split(data_dir, *ALL_ON), 0)
    assert all(without_masks[k].shape == with_masks[k].shape for k in with_masks)
    unmasked = {k: with_masks[k] != 0 for k in with_masks}
    assert all(torch.equal(with_masks[k][unmasked[k]], without_masks[k][unmasked[k]]) for k in with_masks)


def test_dataloader_workers_see_what_one_process_sees(data_dir):
    split = training_split(data_dir, *ALL_ON)
    batches = loader.global_batches(len(split), 4, True, 1, 2)

    def loaded(workers):
        data = loader.make_loader(split.dataset, [], workers, pin_memory=False, training=True)
        data.batch_sampler.set(batches, epoch=2)
        return [(b.ids, b.lengths.tolist(), b.features) for b in data]

    for (ids, lengths, features), (ids2, lengths2, features2) in zip(loaded(0), loaded(2), strict=True):
        assert (ids, lengths) == (ids2, lengths2) and torch.equal(features, features2)


# ---------------------------------------------------------------- training only


def test_evaluation_items_are_never_augmented(data_dir):
    split = training_split(data_dir, *ALL_ON)
    assert split.dataset.augmentation is not None
    assert same(all_features(split, None), all_features(training_split(data_dir, *ALL_OFF), None))
    assert loader.open_split(data_dir, "train").dataset.augmentation is None
    assert augment.Augmentation.from_params(params.parse(ALL_OFF)) is None


def test_training_sees_augmented_features_and_its_evaluation_the_stored_ones(data_dir, tmp_path, monkeypatch):
    seen = {"train": [], "val": []}
    real_step, real_evaluate = train.train_step, inference.evaluate

    def train_step(trainer, micro_batches, global_count):
        seen["train"] += micro_batches
        return real_step(trainer, micro_batches, global_count)

    def evaluate_batches(model, data_loader, world, *decoder):
        batches = list(data_loader)
        seen["val"] += batches
        return real_evaluate(model, batches, world, *decoder)

    monkeypatch.setattr(train, "train_step", train_step)
    monkeypatch.setattr(inference, "evaluate", evaluate_batches)
    words = [*ALL_ON, "epochs=1", "target_wer=0"]
    assert train.main(["--data-dir", str(data_dir), "--results-dir", str(tmp_path / "r"), *words]) in (
        ExitStatus.OK,
        ExitStatus.TARGET_MISSED,
    )
    augmented = all_features(training_split(data_dir, *ALL_ON), 0)
    stored_val = all_features(loader.open_split(data_dir, "val"), None)
    stored_train = all_features(training_split(data_dir, *ALL_OFF), None)
    assert_batches_hold(seen["train"], augmented, stored_train, differ=True)
    assert_batches_hold(seen["val"], stored_val)

    # pytorch.evaluate on the checkpoint of that run (its params say augment) reads the stored features.
    seen["val"] = []
    checkpoint = tmp_path / "r" / "checkpoints" / "last.pt"
    assert evaluate.main(["--checkpoint", str(checkpoint), "--data-dir", str(data_dir), "--split", "train"]) == 0
    assert_batches_hold(seen["val"], stored_train)


def assert_batches_hold(batches, expected: dict, other: dict | None = None, differ: bool = False) -> None:
    """Every utterance of the batches has the features `expected` gives (unpadded), and none equals `other`'s."""
    ids = [i for b in batches for i in b.ids]
    assert ids and len(set(ids)) == len(ids)
    for batch in batches:
        for n, utterance_id in enumerate(batch.ids):
            got = batch.features[n, :, : batch.lengths[n]]
            assert torch.equal(got, expected[utterance_id]), utterance_id
            if differ:
                stored = other[utterance_id]
                assert got.shape != stored.shape or not torch.equal(got, stored), utterance_id


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    "words, message",
    [
        (["tempo_perturb=true", "tempo_low=1.2", "tempo_high=1.1"], "tempo_low=1.2: must not exceed tempo_high=1.1"),
        (["gain_perturb=true", "gain_low_db=3", "gain_high_db=-3"], "gain_low_db=3.0: must not exceed gain_high_db=-3"),
    ],
)
def test_an_empty_range_is_refused_naming_both_ends(words, message):
    with pytest.raises(params.ParamError, match=message):
        params.parse(words)
    off = [w.replace("=true", "=false") for w in words]
    assert params.parse(off)  # a range that is not used is not checked
