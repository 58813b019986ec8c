"""The image encoder run by ONNX Runtime: the served CPU path when ``onnxruntime`` is installed.

The eager :class:`~medground.vision.tinyvit.TinyViT` is exported once (TorchScript exporter, opset 17,
fixed input (1, 3, 256, 256)) to ``litemedsam-<sha256[:16]>/encoder-torch<version>.onnx`` beside the
safetensors cache (kept in memory if that folder cannot be written), then run with ONNX Runtime's CPU
provider using as many intra-op threads as torch has. Same function as the eager encoder; the
equivalence test holds it to the wheel's outputs like the torch paths.
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medground.io import atomic_output
from medground.vision.weights import SOURCE_SHA256, cache_root

__all__ = ["onnx_encoder", "onnxruntime_available"]


def onnxruntime_available() -> bool:
    """Whether ``onnxruntime`` and ``onnx`` (torch's exporter needs it) are installed (the model extra brings
    both)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def _export(encoder: nn.Module, image_size: int) -> bytes:
    """``encoder`` in eval mode as ONNX bytes: input ``images`` (1, 3, S, S) -> ``embeddings``."""
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            encoder.eval(),
            (torch.zeros(1, 3, image_size, image_size),),
            buf,
            input_names=["images"],
            output_names=["embeddings"],
            opset_version=17,
            dynamo=False,
        )
    return buf.getvalue()


def _model_bytes(encoder: nn.Module, image_size: int, cache: Path | None) -> bytes:
    """The exported encoder, from the cache when there, else exported now and cached (if writable)."""
    target = (
        (cache or cache_root())
        / f"litemedsam-{SOURCE_SHA256[:16]}"
        / f"encoder-torch{torch.__version__.split('+')[0]}.onnx"
    )
    if target.is_file():
        return target.read_bytes()
    data = _export(encoder, image_size)
    try:
        with atomic_output(target) as tmp:
            tmp.write_bytes(data)
    except OSError:
        pass  # read-only cache: use the exported model from memory this time
    return data


class OnnxEncoder:
    """(B, 3, S, S) float32 in [0, 1] -> (B, 256, 64, 64) float32, one image at a time through ONNX Runtime."""

    def __init__(self, model: bytes, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no arena, no memory pattern: ~430 MiB less peak per process, the same CPU time (measured 2026-12-08)
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.detach().float().cpu().numpy()
        out = [self.session.run(None, {"images": x[i : i + 1]})[0] for i in range(len(x))]
        return torch.from_numpy(np.concatenate(out))


def onnx_encoder(
    encoder: nn.Module, image_size: int = 256, cache: Path | None = None, threads: int | None = None
) -> OnnxEncoder:
    """``encoder`` (the loaded LiteMedSAM TinyViT) under ONNX Runtime; ``threads``: default torch's count.

    ``cache``: the weights cache folder (default :func:`~medground.vision.weights.cache_root`). Raises
    ModuleNotFoundError if onnxruntime or onnx is absent (check :func:`onnxruntime_available` first).
    """
    return OnnxEncoder(_model_bytes(encoder, image_size, cache), threads or torch.get_num_threads())
