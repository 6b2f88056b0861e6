"""Image triggers: a learned frame, a learned patch, or a bounded full-image perturbation.

Every trigger works in the *model's input space*: images arrive already normalised,
``x = (pixel - mean) / std`` per channel, with pixels in [0, 1]. The learned pixels are
parametrised as ``sigmoid(θ)`` (frame, patch) or ``ε · tanh(θ)`` (additive), so whatever
the optimiser does, the triggered image is a valid image: pixels stay in [0, 1] before
normalisation (the paper's code did not clamp, and its triggers could leave that range).

Masks, means and stds are buffers of shape (1, C or 1, H, W) that broadcast over the
batch, so a trigger runs on any batch size and exports to ONNX with a dynamic batch axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from reprogram.errors import InputError

__all__ = ["ImageTrigger", "BorderTrigger", "PatchTrigger", "AdditiveTrigger", "PATCH_POSITIONS"]

PATCH_POSITIONS = ("top_left", "top_right", "bottom_left", "bottom_right", "center")


def _pair(size) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise InputError(f"image size must be an int or (H, W), got {size!r}") from None
    if h < 1 or w < 1:
        raise InputError(f"image size must be positive, got {size!r}")
    return h, w


class ImageTrigger(nn.Module):
    """Base of the image triggers: input geometry and the pixel <-> model-space maps.

    ``image_size`` is (H, W) of the model's input, ``channels`` 1 or 3, ``mean``/``std``
    the per-channel normalisation the model's data used (defaults 0 and 1: the model
    reads raw [0, 1] pixels).
    """

    kind = "image"

    def __init__(self, image_size, channels: int = 3, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None):
        super().__init__()
        self.image_size = _pair(image_size)
        if channels not in (1, 3):
            raise InputError(f"channels must be 1 or 3, got {channels!r}")
        self.channels = int(channels)
        mean = [0.0] * channels if mean is None else [float(m) for m in mean]
        std = [1.0] * channels if std is None else [float(s) for s in std]
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise InputError(f"mean and std need {channels} value(s), std > 0; got {mean} and {std}")
        self.register_buffer("mean", torch.tensor(mean).view(1, channels, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, channels, 1, 1))

    def to_model_space(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean

    def check(self, x: torch.Tensor) -> None:
        if torch.jit.is_tracing():  # shapes are fixed by the example; the check would be baked in
            return
        if x.dim() != 4 or x.shape[1] != self.channels or tuple(x.shape[2:]) != self.image_size:
            raise InputError(f"{type(self).__name__} expects images of shape (batch, {self.channels}, "
                             f"{self.image_size[0]}, {self.image_size[1]}), got {tuple(x.shape)}")

    def config(self) -> dict:
        """The constructor arguments, for the trigger's ``meta.json``."""
        return {"image_size": list(self.image_size), "channels": self.channels,
                "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}

    def pattern(self) -> torch.Tensor:
        """The learned pixels in [0, 1], shape (1, C, H, W) (for pictures of the trigger)."""
        raise TypeError(f"{type(self).__name__} must define pattern()")


class _MaskedTrigger(ImageTrigger):
    """Replaces the pixels under a fixed mask with learned ones: x·(1 − m) + p·m."""

    def __init__(self, mask: torch.Tensor, image_size, channels, mean, std, seed: int = 0, init_scale: float = 0.01):
        super().__init__(image_size, channels, mean, std)
        self.register_buffer("mask", mask.view(1, 1, *self.image_size).float())
        # θ near 0: the trigger starts as mid-grey, a neutral start for every model; its own
        # generator, so the start depends on ``seed`` only, not on the global RNG
        gen = torch.Generator().manual_seed(int(seed))
        self.theta = nn.Parameter(init_scale * torch.randn(1, self.channels, *self.image_size, generator=gen))

    def pattern(self) -> torch.Tensor:
        return torch.sigmoid(self.theta) * self.mask

    def compose(self, x: torch.Tensor) -> torch.Tensor:
        value = self.to_model_space(torch.sigmoid(self.theta))
        return x * (1.0 - self.mask) + value * self.mask


class BorderTrigger(_MaskedTrigger):
    """A learned frame ``width`` pixels wide around the image.

    ``mode="overlay"`` replaces the frame pixels of the full image; ``mode="shrink"``
    first resizes the image (bilinear) into the inner (H − 2w) x (W − 2w) square, so no
    pixel of the content is hidden, and the frame fills the margin (the paper's border).
    """

    def __init__(self, image_size, width: int = 2, *, mode: str = "shrink", channels: int = 3, mean=None, std=None,
                 seed: int = 0):
        h, w = _pair(image_size)
        if mode not in ("overlay", "shrink"):
            raise InputError(f"border mode must be 'overlay' or 'shrink', got {mode!r}")
        if not 1 <= int(width) < min(h, w) / 2:
            raise InputError(f"border width must be between 1 and {int(min(h, w) / 2 - 0.5)} for {h}x{w} images, "
                             f"got {width}")
        self.width, self.mode = int(width), mode
        mask = torch.ones(h, w)
        mask[self.width : h - self.width, self.width : w - self.width] = 0.0
        super().__init__(mask, (h, w), channels, mean, std, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        if self.mode == "shrink":
            h, w = self.image_size
            inner = F.interpolate(x, size=(h - 2 * self.width, w - 2 * self.width), mode="bilinear",
                                  align_corners=False, antialias=False)
            x = F.pad(inner, [self.width] * 4)
        return self.compose(x)

    def config(self) -> dict:
        return {**super().config(), "width": self.width, "mode": self.mode}


class PatchTrigger(_MaskedTrigger):
    """A learned ``size`` x ``size`` square replacing the pixels at ``position``.

    ``position`` is one of :data:`PATCH_POSITIONS` or a (row, column) of its top-left pixel.
    """

    def __init__(self, image_size, size: int = 4, *, position="bottom_right", channels: int = 3, mean=None, std=None,
                 seed: int = 0):
        h, w = _pair(image_size)
        s = int(size)
        if not 1 <= s <= min(h, w):
            raise InputError(f"patch size must be between 1 and {min(h, w)}, got {size}")
        if isinstance(position, str):
            spots = {"top_left": (0, 0), "top_right": (0, w - s), "bottom_left": (h - s, 0),
                     "bottom_right": (h - s, w - s), "center": ((h - s) // 2, (w - s) // 2)}
            if position not in spots:
                raise InputError(f"patch position must be one of {', '.join(PATCH_POSITIONS)} or (row, col), "
                                 f"got {position!r}")
            r, c = spots[position]
        else:
            r, c = (int(v) for v in position)
            if not (0 <= r <= h - s and 0 <= c <= w - s):
                raise InputError(f"a {s}x{s} patch at ({r}, {c}) does not fit in {h}x{w} images")
        self.size, self.position = s, position if isinstance(position, str) else [r, c]
        mask = torch.zeros(h, w)
        mask[r : r + s, c : c + s] = 1.0
        super().__init__(mask, (h, w), channels, mean, std, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        return self.compose(x)

    def config(self) -> dict:
        return {**super().config(), "size": self.size, "position": self.position}


class AdditiveTrigger(ImageTrigger):
    """A full-image perturbation δ = ε · tanh(θ) in pixel units, so ‖δ‖∞ <= ε.

    The perturbed pixels are clipped to [0, 1]: the triggered image stays a valid image.
    """

    def __init__(self, image_size, epsilon: float = 8 / 255, *, channels: int = 3, mean=None, std=None):
        super().__init__(image_size, channels, mean, std)
        if not 0 < float(epsilon) <= 1:
            raise InputError(f"epsilon must lie in (0, 1] (pixel units), got {epsilon}")
        self.epsilon = float(epsilon)
        self.theta = nn.Parameter(torch.zeros(1, self.channels, *self.image_size))

    def delta(self) -> torch.Tensor:
        return self.epsilon * torch.tanh(self.theta)

    def pattern(self) -> torch.Tensor:
        return 0.5 + self.delta() / (2 * self.epsilon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        return self.to_model_space((self.to_pixels(x) + self.delta()).clamp(0.0, 1.0))

    def config(self) -> dict:
        return {**super().config(), "epsilon": self.epsilon}
