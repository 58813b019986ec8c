"""RidgeSeg: in-context segmentation by a closed-form solver fitted to the support pixels.

Networks meta-trained on the few datasets we have (PoolSeg, UniverSeg) lose to a small U-Net fitted
to the k supports: what they learned about *those* datasets does not transfer. RidgeSeg learns how
to fit a support set instead. Every pixel is described by a feature vector

    phi = [fixed bank (intensity; local mean and local contrast at 4 scales; position),
           support prior (2), learned CNN features (L)] -> + fixed random ReLU expansion (R) + bias

and a class-balanced ridge regression from phi to +-1 is solved in closed form on the support
pixels, per support set (Bertinetto et al., ICLR 2019, "Meta-learning with differentiable
closed-form solvers"). There is no gradient step at inference; the solve is differentiable, so the
learned parts (CNN features, ridge strength, logit scale, and a small refinement U-Net that adds a
residual, zero at initialisation, from the ridge map, the prior, the image and a global vector of
text and k) are trained episodically through it.

- The support prior feature of support example i is the mean of the *other* support masks (leave
  one out), so it has the same meaning on the supports as on a query (the mean of all k masks).
- Order invariance: the solve sums over support pixels; the leave-one-out prior is symmetric.
- Encode once: the support set becomes a :class:`RidgeContext` (weights (D,), prior map, global
  vector); each query then costs one feature pass, one matrix product and one small U-Net.
- k = 0: the weights come from the 384-d text embedding through a linear map.
- Text beside supports (k >= 1) only FiLM-modulates the refinement, and training gives it to half the
  episodes, so the network may use it as a cue for which training dataset it sees, which misleads on
  an unseen domain. At inference :meth:`RidgeSeg.encode_support` therefore keeps a text only where the
  supports themselves show it does not hurt (leave-one-out; see :meth:`RidgeSeg._text_rule`).

All tensors are at the working size ``S = config.size``; the facade (``segmenter.py``) resizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from medground.icl.model import (
    ConvBlock,
    Encoder,
    check_unet_widths,
    film_decode,
    read_config,
    standardize,
    write_config,
)

__all__ = ["FIXED_CHANNELS", "RidgeContext", "RidgeSeg", "RidgeSegConfig", "fixed_features"]

BASE_SIGMAS = (1.0, 2.0, 4.0, 8.0)
"""Blur scales of the fixed bank in pixels at S = 64 (scaled with S)."""
FIXED_CHANNELS = 3 + 6 * len(BASE_SIGMAS) + 5
"""Fixed bank: 3 standardized channels, local mean + local contrast per scale (3 each), 5 position terms."""
PRIOR_CHANNELS = 2
"""Support prior and its blur."""


@dataclass
class RidgeSegConfig:
    """Hyperparameters of :class:`RidgeSeg`; saved as ``config.json`` beside the weights."""

    size: int = 64
    """Side of the square working resolution."""
    learned_channels: int = 16
    """Channels of the learned per-pixel features fed to the solver (0 = fixed bank only)."""
    random_features: int = 512
    """Width R of the fixed random ReLU expansion of the base features."""
    refine_widths: tuple[int, ...] = (16, 32, 32)
    """Channels per scale of the refinement U-Net."""
    text_dim: int = 384
    """Dimension of the sentence embedding (all-MiniLM-L6-v2: 384)."""
    global_dim: int = 32
    """Dimension of the global vector (text, k) that FiLM-modulates the refinement."""
    train_stride: int = 2
    """In training mode the solve uses every train_stride-th row and column of its 64 x 64 grid (speed)."""
    projection_seed: int = 0
    """Seed of the fixed random projection (also saved in the weights)."""
    version: int = 1
    """Config format version."""

    def __post_init__(self) -> None:
        self.refine_widths = check_unet_widths("refine_widths", self.refine_widths, self.size)
        if self.learned_channels < 0 or self.random_features < 0 or self.train_stride < 1:
            raise ValueError("learned_channels and random_features must be >= 0 and train_stride >= 1")

    def to_json(self, path) -> None:
        write_config(self, "ridgeseg", path)

    @classmethod
    def from_json(cls, path) -> RidgeSegConfig:
        return read_config(cls, path)

    @property
    def base_dim(self) -> int:
        """Channels of the base features: fixed bank + prior + learned."""
        return FIXED_CHANNELS + PRIOR_CHANNELS + self.learned_channels

    @property
    def solver_dim(self) -> int:
        """D: base + random expansion + bias."""
        return self.base_dim + self.random_features + 1


@dataclass
class RidgeContext:
    """The support set (and text) of E episodes, solved once and reused for any number of queries.

    ``weights``: (E, D) ridge solution over the solver features; ``prior``: (E, 1, S, S) mean support
    mask (zeros when k = 0); ``glob``: (E, global_dim); ``k``: support size (same for all episodes);
    ``text_used``: (E,) bool, whether each episode's text modulates the refinement after the text rule
    (None when no episode was given a text, or in training mode, where no rule runs).
    """

    weights: torch.Tensor
    prior: torch.Tensor
    glob: torch.Tensor
    k: int
    text_used: torch.Tensor | None = None


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with edge replication: (N, C, H, W) -> same shape."""
    radius = max(1, min(int(math.ceil(3 * sigma)), min(x.shape[-2:]) - 1))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = F.conv2d(
        F.pad(x, (radius, radius, 0, 0), mode="replicate"),
        kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1),
        groups=c,
    )
    return F.conv2d(
        F.pad(x, (0, 0, radius, radius), mode="replicate"),
        kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1),
        groups=c,
    )


def fixed_features(x: torch.Tensor) -> torch.Tensor:
    """The fixed bank: (N, 3, S, S) standardized images -> (N, FIXED_CHANNELS, S, S).

    Channels: the image; per scale sigma (BASE_SIGMAS scaled by S / 64) the local mean and the local
    standard deviation; position x, y, x^2, y^2, xy with x, y in [-1, 1] (x to the right, y down).
    """
    n, _, size, _ = x.shape
    parts = [x]
    for sigma in BASE_SIGMAS:
        s = sigma * size / 64
        mean = _gaussian_blur(x, s)
        parts += [mean, (_gaussian_blur(x * x, s) - mean * mean).clamp_min(0).add(1e-6).sqrt()]
    axis = torch.linspace(-1, 1, size, dtype=x.dtype, device=x.device)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    parts.append(torch.stack([xx, yy, xx * xx, yy * yy, xx * yy])[None].expand(n, -1, -1, -1))
    return torch.cat(parts, 1)


class RidgeSeg(nn.Module):
    """Closed-form in-context segmenter; see the module docstring for the idea."""

    architecture = "ridgeseg"

    def __init__(self, config: RidgeSegConfig | None = None) -> None:
        super().__init__()
        self.config = config or RidgeSegConfig()
        cfg = self.config
        learned = cfg.learned_channels
        self.cnn = Encoder(3, (learned, learned)) if learned else None
        gen = torch.Generator().manual_seed(cfg.projection_seed)
        self.register_buffer(
            "projection",
            torch.randn(cfg.base_dim, cfg.random_features, generator=gen) / math.sqrt(cfg.base_dim),
        )
        self.register_buffer("offset", torch.randn(cfg.random_features, generator=gen) * 0.5)
        self.log_ridge = nn.Parameter(torch.tensor(math.log(1e-3)))
        self.logit_scale = nn.Parameter(torch.tensor(4.0))
        self.logit_bias = nn.Parameter(torch.tensor(0.0))
        self.text_weights = nn.Linear(cfg.text_dim, cfg.solver_dim)
        self.glob_mlp = nn.Sequential(
            nn.Linear(cfg.text_dim + 4, cfg.global_dim), nn.GELU(), nn.Linear(cfg.global_dim, cfg.global_dim)
        )
        w = cfg.refine_widths
        self.refine_encoder = Encoder(5, w)
        self.refine_up = nn.ModuleList(ConvBlock(w[i] + w[i + 1], w[i]) for i in range(len(w) - 1))
        self.refine_film = nn.ModuleList(nn.Linear(cfg.global_dim, 2 * w[i]) for i in range(len(w) - 1))
        self.refine_head = nn.Conv2d(w[0], 1, 1)
        nn.init.zeros_(self.refine_head.weight)
        nn.init.zeros_(self.refine_head.bias)

    # ------------------------------------------------------------------ features
    def _base(self, images: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """Base features: images (N, 3, S, S) in any range, prior (N, 1, S, S) -> (N, base_dim, S, S)."""
        x = standardize(images)
        parts = [fixed_features(x), prior, _gaussian_blur(prior, 2.0 * self.config.size / 64)]
        if self.cnn is not None:
            coarse, fine = self.cnn(x)[::-1]
            parts.append(
                fine + F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
            )
        return torch.cat(parts, 1)

    def _expand(self, base: torch.Tensor) -> torch.Tensor:
        """Solver features of pixels: (..., base_dim) -> (..., D) = [base, relu(base P + o), 1]."""
        parts = [base, torch.relu(base @ self.projection + self.offset), base.new_ones(*base.shape[:-1], 1)]
        return torch.cat(parts, -1)

    def _ridge_map(self, base: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``_expand(base) @ weights`` without materialising the expanded features (memory):
        base (N, P, base_dim), weights (N, D) -> (N, P)."""
        b, r = self.config.base_dim, self.config.random_features
        rows = []
        for x, w in zip(base, weights, strict=True):  # one image at a time: (P, R) hidden units at most
            hidden = torch.relu(x @ self.projection + self.offset)
            rows.append(x @ w[:b] + hidden @ w[b : b + r] + w[-1])
        return torch.stack(rows)

    def _glob(self, text: torch.Tensor, k: int, prior: torch.Tensor) -> torch.Tensor:
        """Global vector from text (E, text_dim), k and the prior's foreground fraction -> (E, global_dim)."""
        e = text.shape[0]
        has_text = (text.abs().sum(1, keepdim=True) > 0).to(text.dtype)
        has_support = text.new_full((e, 1), float(k > 0))
        inv_k = text.new_full((e, 1), 1.0 / math.sqrt(k) if k else 0.0)
        fraction = prior.mean((1, 2, 3))[:, None]
        return self.glob_mlp(torch.cat([text, has_text, has_support, inv_k, fraction], 1))

    # ------------------------------------------------------------------ support side
    def encode_support(
        self, images: torch.Tensor, masks: torch.Tensor, text: torch.Tensor | None = None
    ) -> RidgeContext:
        """Solve the ridge regression of each episode's support set.

        images: (E, k, 3, S, S) float (any range, standardised here); masks: (E, k, 1, S, S) in [0, 1];
        text: (E, text_dim) sentence embeddings (an all-zero row means "no text") or None. k may be 0
        (then every episode needs text, and the text alone gives the weights). With k >= 1 in eval mode
        an episode's text is kept only if :meth:`_text_rule` finds it does not hurt; ``text_used`` says.
        """
        e, k, _, size, _ = images.shape
        given = text is not None and bool((text.abs().sum(1) > 0).any())
        text = text if text is not None else images.new_zeros(e, self.config.text_dim)
        if k == 0:
            if not bool((text.abs().sum(1) > 0).all()):
                raise ValueError("an empty support set (k = 0) needs a text prompt for every episode")
            prior = images.new_zeros(e, 1, size, size)
            return RidgeContext(self.text_weights(text), prior, self._glob(text, 0, prior), 0)
        total = masks.sum(1, keepdim=True)
        # leave-one-out prior of each support image; with k = 1 only its foreground fraction
        loo = (total - masks) / (k - 1) if k > 1 else masks.mean((2, 3, 4), keepdim=True).expand_as(masks)
        base = self._base(images.flatten(0, 1), loo.flatten(0, 1)).unflatten(0, (e, k))  # (E, k, B, S, S)
        # The solve sees each support on a grid of at most 64 x 64 points (sparser while training).
        stride = max(1, size // 64) * (self.config.train_stride if self.training else 1)
        grid = base[..., ::stride, ::stride]
        target = masks[..., ::stride, ::stride]
        # Inference accumulates in float64 so that the support order changes nothing (to ~1e-6);
        # training tolerates float32 rounding for speed.
        dtype = images.dtype if self.training else torch.float64
        dim = self.config.solver_dim
        gram = images.new_zeros(e, dim, dim, dtype=dtype)
        rhs = images.new_zeros(e, dim, dtype=dtype)
        positive = target.mean((1, 2, 3, 4)).clamp(1e-3, 1 - 1e-3)[:, None].to(dtype)  # (E, 1)
        terms = []  # each support's (gram, rhs) share, kept for the text rule's leave-one-out solves
        for i in range(k):  # one support image at a time bounds the memory of the (pixels, D) matrix
            phi = self._expand(grid[:, i].flatten(2).transpose(1, 2)).to(dtype)  # (E, P, D)
            m = target[:, i].flatten(1).to(dtype)  # (E, P)
            weight = m * 0.5 / positive + (1 - m) * 0.5 / (1 - positive)  # class-balanced
            term = (
                phi.transpose(1, 2) @ (phi * weight[..., None]),
                (phi * (weight * (2 * m - 1))[..., None]).sum(1),
            )
            gram, rhs = gram + term[0], rhs + term[1]
            if given and not self.training:
                terms.append(term)
        pixels = target[0, 0].numel()
        weights = self._solve(gram, rhs, k * pixels).to(images.dtype)
        prior = total[:, 0] / k  # (E, 1, S, S)
        used = None
        if terms:
            used = self._text_rule(images, masks, text, base, loo, (gram, rhs, terms, pixels))
            text = text * used[:, None].to(text.dtype)
        return RidgeContext(weights, prior, self._glob(text, k, prior), k, used)

    def _solve(self, gram: torch.Tensor, rhs: torch.Tensor, count: int) -> torch.Tensor:
        """Ridge weights (E, D) from summed Gram (E, D, D) and right-hand side (E, D) over ``count`` pixels."""
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        return torch.linalg.solve(gram / count + self.log_ridge.exp().to(gram.dtype) * eye, rhs / count)

    def _text_rule(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        text: torch.Tensor,
        base: torch.Tensor,
        loo: torch.Tensor,
        solved: tuple,
    ) -> torch.Tensor:
        """Which episodes keep their text: (E,) bool. The rule that makes text beside supports safe.

        Why: with supports, the text only FiLM-modulates the refinement, and training gave it to half
        the episodes, so it can act as a training-dataset cue that wrecks masks on an unseen domain
        (shipped weights on held-out ph2 at k = 8: 0.514 Dice with the name vs 0.835 without). Only the
        supports can tell, so the text must earn its place on them:
        - k >= 2: leave-one-out. Support j is segmented from the other k - 1 supports (their ridge
          weights, the mean of their masks as prior, k - 1 in the global vector) with and without the
          text; the text is kept if its mean Dice over the k supports is not lower. The k - 1 weights
          come from the Gram terms already summed for the full solve minus support j's, so the check
          costs k small (D x D) solves and 2k refinement passes, not k new passes over the pixels. The
          other supports' prior channel in those terms still averages in support j's mask (the exact
          leave-one-out would rebuild their features); it shifts the ridge map that both sides of the
          comparison share, not the comparison itself. Dice: the 0/1 prediction p (logit > 0)
          against the soft (S, S) support mask m, 2 sum(p m) / (sum p + sum m) (1 if both are empty).
        - k = 1: dropped. One example cannot validate it (there is no other support to hold out), and
          the refinement without text is the path whose behaviour with supports alone was measured.
        Text alone (k = 0) is not affected: there the text is the only prompt.
        images, masks, loo: (E, k, C, S, S); text: (E, text_dim); base: (E, k, B, S, S) features of the
        supports with their leave-one-out prior; solved: (gram, rhs, per-support terms, pixels each).
        """
        e, k, _, size, _ = images.shape
        has_text = text.abs().sum(1) > 0
        if k == 1:
            return torch.zeros_like(has_text)
        gram, rhs, terms, pixels = solved
        maps = []
        for j, (g, r) in enumerate(terms):
            held = self._solve(gram - g, rhs - r, (k - 1) * pixels).to(images.dtype)
            maps.append(self._ridge_map(base[:, j].flatten(2).transpose(1, 2), held).view(e, 1, size, size))
        ridge = torch.stack(maps, 1).flatten(0, 1)  # (E*k, 1, S, S), episode-major like images
        prior, shots = loo.flatten(0, 1), images.flatten(0, 1)
        globs = [self._glob(t.repeat_interleave(k, 0), k - 1, prior) for t in (torch.zeros_like(text), text)]
        twice = [x.repeat(2, 1, 1, 1) for x in (ridge, prior, shots)]
        logits = self._refined(*twice, torch.cat(globs))  # first E*k rows without text, then with it
        pred = (logits > 0).to(masks.dtype).unflatten(0, (2, e, k))  # (2, E, k, 1, S, S)
        overlap = (pred * masks).sum((3, 4, 5))
        sizes = pred.sum((3, 4, 5)) + masks.sum((2, 3, 4))
        dice = torch.where(sizes > 0, 2 * overlap / sizes.clamp_min(1e-6), torch.ones_like(sizes))
        without, with_text = dice.mean(2)  # (E,) each
        return has_text & (with_text >= without)

    # ------------------------------------------------------------------ query side
    def segment(self, queries: torch.Tensor, context: RidgeContext) -> torch.Tensor:
        """Logits for queries (E, Q, 3, S, S) given a context of E episodes -> (E, Q, 1, S, S)."""
        e, nq, _, size, _ = queries.shape
        prior = context.prior.repeat_interleave(nq, dim=0)  # (E*Q, 1, S, S)
        base = self._base(queries.flatten(0, 1), prior)
        ridge = self._ridge_map(base.flatten(2).transpose(1, 2), context.weights.repeat_interleave(nq, dim=0))
        ridge = ridge.view(e * nq, 1, size, size)
        glob = context.glob.repeat_interleave(nq, dim=0)
        return self._refined(ridge, prior, queries.flatten(0, 1), glob).unflatten(0, (e, nq))

    def _refined(
        self, ridge: torch.Tensor, prior: torch.Tensor, images: torch.Tensor, glob: torch.Tensor
    ) -> torch.Tensor:
        """Logits (N, 1, S, S) from the raw ridge map and prior (N, 1, S, S), images (N, 3, S, S) and
        global vectors (N, global_dim): the scaled ridge map plus the FiLM-modulated refinement."""
        ridge = self.logit_scale * ridge + self.logit_bias
        skips = self.refine_encoder(torch.cat([ridge, prior, standardize(images)], 1))
        x = film_decode(skips, self.refine_up, self.refine_film, glob)
        return ridge + self.refine_head(x)

    def forward(
        self,
        queries: torch.Tensor,
        images: torch.Tensor,
        masks: torch.Tensor,
        text: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Episodes in one call: queries (E, Q, 3, S, S), support (E, k, 3, S, S)/(E, k, 1, S, S) -> logits (E, Q, 1, S, S)."""
        return self.segment(queries, self.encode_support(images, masks, text))
