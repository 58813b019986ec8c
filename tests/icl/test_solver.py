"""RidgeSeg's closed-form solver: the fixed feature bank by hand, the solve against numpy, and that an
untrained model already segments from examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from icl_helpers import disc, tiny_ridgeseg

from medground.icl.solver import FIXED_CHANNELS, RidgeSeg, RidgeSegConfig, fixed_features


def test_fixed_bank_by_hand() -> None:
    size = 16
    flat = torch.full((1, 3, size, size), 0.7)
    feats = fixed_features(flat)
    assert feats.shape == (1, FIXED_CHANNELS, size, size)
    # a constant image: every local mean is the constant, every local contrast ~0 (sqrt of 1e-6)
    for scale in range(4):
        mean = feats[0, 3 + 6 * scale : 6 + 6 * scale]
        contrast = feats[0, 6 + 6 * scale : 9 + 6 * scale]
        assert torch.allclose(mean, torch.tensor(0.7), atol=1e-5)
        assert float(contrast.max()) < 2e-3
    x, y = feats[0, -5], feats[0, -4]
    assert x[0, 0] == -1 and x[0, -1] == 1 and y[0, 0] == -1 and y[-1, 0] == 1  # x right, y down
    assert torch.allclose(feats[0, -1], x * y)


@torch.no_grad()
def test_solve_matches_numpy_weighted_ridge() -> None:
    """The support weights minimise sum_i w_i (phi_i . v - y_i)^2 / N + lambda |v|^2, solved here by
    numpy's least squares on the stacked system [sqrt(w) phi; sqrt(N lambda) I] v = [sqrt(w) y; 0]."""
    model = RidgeSeg(
        RidgeSegConfig(size=16, learned_channels=0, random_features=8, refine_widths=(4, 8))
    ).eval()
    g = torch.Generator().manual_seed(1)
    images = torch.rand(1, 2, 3, 16, 16, generator=g)
    masks = (torch.rand(1, 2, 1, 16, 16, generator=g) > 0.6).float()
    weights = model.encode_support(images, masks).weights[0].double().numpy()

    loo = torch.cat([masks[:, 1], masks[:, 0]])  # leave-one-out prior of each support image (k = 2)
    base = model._base(images[0], loo)  # (2, B, 16, 16)
    phi = model._expand(base.flatten(2).transpose(1, 2)).reshape(-1, model.config.solver_dim).double().numpy()
    m = masks[0].flatten().double().numpy()
    p = m.mean()
    w = np.where(m > 0, 0.5 / p, 0.5 / (1 - p))
    n, lam = len(m), float(model.log_ridge.exp())
    a = np.vstack([np.sqrt(w)[:, None] * phi, np.sqrt(n * lam) * np.eye(phi.shape[1])])
    b = np.concatenate([np.sqrt(w) * (2 * m - 1), np.zeros(phi.shape[1])])
    expected = np.linalg.lstsq(a, b, rcond=None)[0]
    np.testing.assert_allclose(weights, expected, rtol=1e-3, atol=1e-4)


def _disc_task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n images of a bright disc at a random place on a noisy dark background, and its masks."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for _ in range(n):
        mask = disc(32, 32, int(rng.integers(8, 24)), int(rng.integers(8, 24)), int(rng.integers(4, 7)))
        image = 0.2 + 0.6 * mask + 0.05 * rng.standard_normal((32, 32))
        images.append(torch.tensor(image, dtype=torch.float32).expand(3, -1, -1))
        masks.append(torch.tensor(mask, dtype=torch.float32)[None])
    return torch.stack(images), torch.stack(masks)


@pytest.mark.parametrize("k", [2, 4])
@torch.no_grad()
def test_untrained_model_segments_from_examples(k: int) -> None:
    """The solver learns "bright = foreground" from the support alone, with random learned parts."""
    model = tiny_ridgeseg()
    images, masks = _disc_task(k + 3, seed=k)
    logits = model(images[None, k:], images[None, :k], masks[None, :k])[0]
    pred, truth = logits > 0, masks[k:] > 0.5
    dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    assert dice > 0.9, float(dice)


def test_training_mode_solves_on_a_sparser_grid_and_stays_finite() -> None:
    model = tiny_ridgeseg().train()
    images, masks = _disc_task(4, seed=0)
    logits = model(images[None, 2:], images[None, :2], masks[None, :2])
    logits.mean().backward()
    assert torch.isfinite(logits).all()
    assert model.log_ridge.grad is not None and torch.isfinite(model.log_ridge.grad)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match=r"positive multiple of 2\*\*2"):
        RidgeSegConfig(size=30, refine_widths=(4, 8, 8))
    with pytest.raises(ValueError, match="train_stride"):
        RidgeSegConfig(train_stride=0)
