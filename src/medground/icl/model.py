"""PoolSeg: in-context segmentation with a support set encoded once into an order-invariant context.

UniverSeg pairs the query with every support example at every layer (CrossConv), so each query costs
``k`` convolutions per layer and nothing can be cached. PoolSeg instead:

1. runs one shared image encoder over the support images once (``k`` passes in all);
2. pools the support set per scale into a fixed-size, order-invariant :class:`SupportContext`
   (sums/means over the support axis only): foreground and background prototypes (masked average
   pooling), a spatial context map (mean of a 1x1 projection of [features, mask]), the mean mask
   (location prior), and, at the coarsest scale, key/value pairs for attention-based label
   propagation (softmax attention is a set operation, hence order invariant too);
3. segments each query with ONE U-Net pass whose skip connections are fused with that context and
   whose decoder is FiLM-modulated by a global vector made from the prototypes and the text embedding.

With ``k = 0`` the foreground prototypes come from the 384-d sentence embedding of the text and the
background prototypes are learned, so text alone works. All tensors are at the working size
``S = config.size``; resizing to and from the user's frame is the facade's job (``segmenter.py``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

__all__ = [
    "PoolSeg",
    "PoolSegConfig",
    "SupportContext",
    "check_unet_widths",
    "film_decode",
    "model_folder_files",
    "read_config",
    "save_model_folder",
    "standardize",
    "write_config",
]


@dataclass
class PoolSegConfig:
    """Hyperparameters of :class:`PoolSeg`; saved as ``config.json`` beside the weights."""

    size: int = 64
    """Side of the square working resolution (images are resized to size x size)."""
    widths: tuple[int, ...] = (16, 32, 48, 64)
    """Channels per encoder scale; scale l has resolution size / 2**l."""
    image_channels: int = 3
    """Image channels seen by the network (gray is repeated to 3, alpha dropped)."""
    text_dim: int = 384
    """Dimension of the sentence embedding (all-MiniLM-L6-v2: 384)."""
    global_dim: int = 64
    """Dimension of the global conditioning vector that drives FiLM in the decoder."""
    attn_dim: int = 32
    """Key/query dimension of the coarse-scale label-propagation attention."""
    version: int = 1
    """Config format version."""

    def __post_init__(self) -> None:
        self.widths = check_unet_widths("widths", self.widths, self.size)

    def to_json(self, path: Path) -> None:
        write_config(self, "poolseg", path)

    @classmethod
    def from_json(cls, path: Path) -> PoolSegConfig:
        return read_config(cls, path)


def check_unet_widths(field: str, widths, size: int) -> tuple[int, ...]:
    """Channels per U-Net scale as a tuple; raises ValueError unless there are >= 2 positive entries
    and ``size`` halves evenly down to the coarsest scale."""
    widths = tuple(int(w) for w in widths)
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(f"{field} needs >= 2 positive entries, got {widths}")
    if size < 2 ** (len(widths) - 1) or size % (2 ** (len(widths) - 1)) != 0:
        raise ValueError(
            f"size {size} must be a positive multiple of 2**{len(widths) - 1}; pick e.g. 64 or 128"
        )
    return widths


def write_config(config, architecture: str, path: Path) -> None:
    """A model config dataclass -> ``config.json`` with its ``architecture`` key."""
    data = asdict(config) | {"architecture": architecture}
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


def save_model_folder(model: nn.Module, folder: Path) -> Path:
    """Write ``folder/config.json`` (the model's ``config``) and ``folder/model.safetensors`` (its state on CPU)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.config.to_json(folder / "config.json")
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
        str(folder / "model.safetensors"),
    )
    return folder


def model_folder_files(folder: Path, what: str, written_by: str) -> tuple[Path, Path]:
    """``(config.json, model.safetensors)`` of a folder of :func:`save_model_folder`; FileNotFoundError naming
    the missing file and what writes such folders."""
    files = Path(folder) / "config.json", Path(folder) / "model.safetensors"
    for needed in files:
        if not needed.is_file():
            raise FileNotFoundError(
                f"{what} {folder} lacks {needed.name}; expected config.json + model.safetensors "
                f"as written by {written_by}"
            )
    return files


def read_config(cls, path: Path):
    """``config.json`` -> an instance of the config dataclass ``cls``; unknown keys are an error."""
    data = json.loads(Path(path).read_text())
    data.pop("architecture", None)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown config keys {unknown}; known keys are {sorted(known)}")
    return cls(**data)


@dataclass
class SupportContext:
    """The support set (and text) of E episodes, pooled once and reused for any number of queries.

    Per scale l (resolution h_l = size / 2**l, channels C_l), every tensor has a leading episode axis E:
    ``fg[l]``/``bg[l]``: (E, C_l) prototypes; ``ctx[l]``: (E, C_l, h_l, h_l) spatial context;
    ``prior[l]``: (E, 1, h_l, h_l) mean support mask. ``keys``: (E, N, attn_dim) and ``values``: (E, N, 1)
    for coarse label propagation (N = k * h_L**2, N = 0 when k = 0). ``glob``: (E, global_dim).
    ``k`` is the number of support pairs (same for all episodes).
    """

    fg: list[torch.Tensor]
    bg: list[torch.Tensor]
    ctx: list[torch.Tensor]
    prior: list[torch.Tensor]
    keys: torch.Tensor
    values: torch.Tensor
    glob: torch.Tensor
    k: int


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Per-image zero-mean unit-variance: (N, C, H, W) float -> same shape (removes intensity shifts)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True)
    return (x - mean) / (std + 1e-5)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(channels, 8), channels)


class ConvBlock(nn.Module):
    """Two 3x3 conv + GroupNorm + GELU: (N, cin, H, W) -> (N, cout, H, W)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1),
            _norm(cout),
            nn.GELU(),
            nn.Conv2d(cout, cout, 3, padding=1),
            _norm(cout),
            nn.GELU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Encoder(nn.Module):
    """Shared image encoder: (N, image_channels, S, S) -> list of (N, C_l, S/2**l, S/2**l)."""

    def __init__(self, cin: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        chans = (cin, *widths)
        self.blocks = nn.ModuleList(ConvBlock(chans[i], chans[i + 1]) for i in range(len(widths)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            feats.append(x)
        return feats


def film_decode(
    skips: list[torch.Tensor], up: nn.ModuleList, film: nn.ModuleList, glob: torch.Tensor
) -> torch.Tensor:
    """U-Net decoder whose every level is FiLM-modulated by a global vector.

    skips: per scale (N, C_l, h_l, w_l), finest first; ``up[l]`` fuses the upsampled coarser map with
    skip l; ``film[l]`` maps glob (N, G) to (gamma, beta) for level l. Returns (N, C_0, h_0, w_0).
    """
    x = skips[-1]
    for level in range(len(skips) - 2, -1, -1):
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = up[level](torch.cat([x, skips[level]], 1))
        gamma, beta = film[level](glob).chunk(2, dim=1)
        x = x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
    return x


def _cosine(q: torch.Tensor, proto: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of (E, Q, C, h, w) features with (E, C) prototypes -> (E, Q, 1, h, w)."""
    proto = F.normalize(proto, dim=1)[:, None, :, None, None]
    return (F.normalize(q, dim=2) * proto).sum(dim=2, keepdim=True)


class PoolSeg(nn.Module):
    """Encode-once in-context segmenter; see the module docstring for the idea."""

    architecture = "poolseg"

    def __init__(self, config: PoolSegConfig | None = None) -> None:
        super().__init__()
        self.config = config or PoolSegConfig()
        cfg, w = self.config, self.config.widths
        self.encoder = Encoder(cfg.image_channels, w)
        self.ctx_proj = nn.ModuleList(nn.Conv2d(c + 1, c, 1) for c in w)
        self.text_fg = nn.ModuleList(nn.Linear(cfg.text_dim, c) for c in w)
        self.null_bg = nn.ParameterList(nn.Parameter(torch.randn(c) * 0.1) for c in w)
        self.key_proj = nn.Conv2d(w[-1], cfg.attn_dim, 1)
        self.attn_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.glob_mlp = nn.Sequential(
            nn.Linear(cfg.text_dim + 2 + 2 * w[-1], cfg.global_dim),
            nn.GELU(),
            nn.Linear(cfg.global_dim, cfg.global_dim),
        )
        # fuse: [query feats, context map, prior, sim fg, sim bg, flag, (propagated mask at coarsest)]
        self.fuse = nn.ModuleList(
            nn.Sequential(nn.Conv2d(2 * c + 4 + (i == len(w) - 1), c, 3, padding=1), _norm(c), nn.GELU())
            for i, c in enumerate(w)
        )
        self.up = nn.ModuleList(ConvBlock(w[i] + w[i + 1], w[i]) for i in range(len(w) - 1))
        self.film = nn.ModuleList(nn.Linear(cfg.global_dim, 2 * w[i]) for i in range(len(w) - 1))
        self.head = nn.Conv2d(w[0], 1, 1)

    # ------------------------------------------------------------------ support side
    def encode_support(
        self, images: torch.Tensor, masks: torch.Tensor, text: torch.Tensor | None = None
    ) -> SupportContext:
        """Pool a support set once.

        images: (E, k, image_channels, S, S) float (any range, standardised here); masks: (E, k, 1, S, S)
        float in [0, 1]; text: (E, text_dim) sentence embeddings (an all-zero row means "no text"), or None.
        k may be 0 (then every episode needs text). Returns a :class:`SupportContext` with leading axis E.
        """
        e, k = images.shape[:2]
        text = text if text is not None else images.new_zeros(e, self.config.text_dim)
        has_text = (text.abs().sum(1, keepdim=True) > 0).to(images.dtype)  # (E, 1): all-zero row = no text
        if k == 0:
            if not bool(has_text.all()):
                raise ValueError("an empty support set (k = 0) needs a text prompt for every episode")
            return self._text_only_context(text)
        feats = self.encoder(standardize(images.flatten(0, 1)))  # per scale (E*k, C, h, w)
        fg, bg, ctx, prior = [], [], [], []
        for level, f in enumerate(feats):
            m = F.adaptive_avg_pool2d(masks.flatten(0, 1), f.shape[-1])  # (E*k, 1, h, w)
            fk = f.unflatten(0, (e, k))  # (E, k, C, h, w)
            mk = m.unflatten(0, (e, k))  # (E, k, 1, h, w)
            fg.append((fk * mk).sum((1, 3, 4)) / (mk.sum((1, 3, 4)) + 1e-4))
            bg.append((fk * (1 - mk)).sum((1, 3, 4)) / ((1 - mk).sum((1, 3, 4)) + 1e-4))
            ctx.append(self.ctx_proj[level](torch.cat([f, m], 1)).unflatten(0, (e, k)).mean(1))
            prior.append(mk.mean(1))
        keys = self.key_proj(feats[-1]).unflatten(0, (e, k))  # (E, k, A, h, w)
        keys = keys.permute(0, 1, 3, 4, 2).reshape(e, -1, self.config.attn_dim)  # (E, k*h*w, A)
        coarse = F.adaptive_avg_pool2d(masks.flatten(0, 1), feats[-1].shape[-1]).unflatten(0, (e, k))
        values = coarse.permute(0, 1, 3, 4, 2).reshape(e, -1, 1)  # (E, k*h*w, 1)
        flags = torch.cat([has_text, torch.ones_like(has_text)], 1)
        glob = self.glob_mlp(torch.cat([text, flags, fg[-1], bg[-1]], 1))
        return SupportContext(fg, bg, ctx, prior, F.normalize(keys, dim=-1), values, glob, k)

    def _text_only_context(self, text: torch.Tensor) -> SupportContext:
        """k = 0: prototypes from text (E, text_dim), learned background, empty maps."""
        e, size = text.shape[0], self.config.size
        fg = [proj(text) for proj in self.text_fg]
        bg = [p[None].expand(e, -1) for p in self.null_bg]
        shapes = [(c, size >> lvl) for lvl, c in enumerate(self.config.widths)]
        ctx = [text.new_zeros(e, c, h, h) for c, h in shapes]
        prior = [text.new_zeros(e, 1, h, h) for _, h in shapes]
        flags = text.new_tensor([1.0, 0.0]).expand(e, 2)
        glob = self.glob_mlp(torch.cat([text, flags, fg[-1], bg[-1]], 1))
        a = self.config.attn_dim
        return SupportContext(fg, bg, ctx, prior, text.new_zeros(e, 0, a), text.new_zeros(e, 0, 1), glob, 0)

    # ------------------------------------------------------------------ query side
    def _propagate(self, q: torch.Tensor, context: SupportContext) -> torch.Tensor:
        """Attention label propagation at the coarsest scale: (E, Q, C, h, w) -> (E, Q, 1, h, w)."""
        e, nq, _, h, w = q.shape
        if context.k == 0:
            return q.new_zeros(e, nq, 1, h, w)
        qk = self.key_proj(q.flatten(0, 1)).unflatten(0, (e, nq))  # (E, Q, A, h, w)
        qk = F.normalize(qk.permute(0, 1, 3, 4, 2).reshape(e, nq * h * w, -1), dim=-1)
        attn = torch.softmax(self.attn_scale.exp() * qk @ context.keys.transpose(1, 2), dim=-1)
        return (attn @ context.values).reshape(e, nq, h, w, 1).permute(0, 1, 4, 2, 3)

    def _fused_skips(self, queries: torch.Tensor, context: SupportContext) -> list[torch.Tensor]:
        """Query features fused with the context, per scale: list of (E*Q, C_l, h_l, w_l)."""
        e, nq = queries.shape[:2]
        feats = self.encoder(standardize(queries.flatten(0, 1)))
        flag = float(context.k > 0)
        out = []
        for level, f in enumerate(feats):
            fq = f.unflatten(0, (e, nq))  # (E, Q, C, h, w)
            h = f.shape[-1]
            parts = [
                fq,
                context.ctx[level][:, None].expand(-1, nq, -1, -1, -1),
                context.prior[level][:, None].expand(-1, nq, -1, -1, -1),
                _cosine(fq, context.fg[level]),
                _cosine(fq, context.bg[level]),
                fq.new_full((e, nq, 1, h, h), flag),
            ]
            if level == len(feats) - 1:
                parts.append(self._propagate(fq, context))
            out.append(self.fuse[level](torch.cat(parts, 2).flatten(0, 1)))
        return out

    def segment(self, queries: torch.Tensor, context: SupportContext) -> torch.Tensor:
        """Logits for queries (E, Q, image_channels, S, S) given a context of E episodes -> (E, Q, 1, S, S)."""
        e, nq = queries.shape[:2]
        skips = self._fused_skips(queries, context)
        glob = context.glob.repeat_interleave(nq, dim=0)  # (E*Q, G)
        return self.head(film_decode(skips, self.up, self.film, glob)).unflatten(0, (e, nq))

    def forward(
        self,
        queries: torch.Tensor,
        images: torch.Tensor,
        masks: torch.Tensor,
        text: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Episodes in one call: queries (E, Q, C, S, S), support (E, k, C, S, S)/(E, k, 1, S, S) -> logits (E, Q, 1, S, S)."""
        return self.segment(queries, self.encode_support(images, masks, text))
