"""Random shifts on a share of the samples (``TrainConfig.shift_prob``): the unshifted ones are framed
as at inference, and ``shift_prob`` 1 draws exactly the pads of the plain ``shift`` option."""

import random

import pytest

from medground.mllm.data import random_pad, read_records
from medground.mllm.families import get_family
from medground.mllm.train import RecordDataset, TrainConfig


def _frames(dataset, **options):
    records = read_records(dataset)
    cfg = TrainConfig(data=str(dataset), seed=3, **options)
    ds = RecordDataset(records, None, get_family("qwen2-vl"), str(dataset), cfg)
    return [ds.frame(records[0]) for _ in range(400)]


def test_shift_prob_one_draws_the_same_pads_as_shift_alone(dataset):
    rng = random.Random(3)  # the dataset's seed; no crop, so every draw is one pad of the 64 x 48 image
    expected = [random_pad(64, 48, rng, 0.2) for _ in range(400)]
    assert [pad for _, pad in _frames(dataset, shift=0.2)] == expected
    assert _frames(dataset, shift=0.2, shift_prob=1.0) == [(None, pad) for pad in expected]


def test_shift_prob_shifts_that_share_of_the_samples_and_zero_none(dataset):
    pads = [pad for _, pad in _frames(dataset, shift=0.2, shift_prob=0.5)]
    shifted = sum(pad is not None for pad in pads)
    assert 160 <= shifted <= 240  # 400 fair coin flips: mean 200, sd 10
    assert all(pad is None for _, pad in _frames(dataset, shift=0.2, shift_prob=0.0))
    crops = _frames(dataset, augment=0.3, shift=0.2, shift_prob=0.0)
    assert all(crop is not None and pad is None for crop, pad in crops)


def test_shift_prob_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="shift_prob must be in"):
        TrainConfig(shift_prob=1.5)
