"""Model scales: one code path, two sizes (README, "two scales"; docs/DECISIONS.md).

"paper" is the original VGG-16 DecoupledNet at 320x320 (pool5 10x10, fc6 7x7 -> 4x4 score map,
docs/REFERENCE.md §1.3). "cpu" divides every width by 4 and works at 96 px: pool5 is 3x3, and fc6's
kernel is 2 so that the class-score map stays 2x2 -- a 1x1 map would make max- and
avg-pooling identical and the max-switch of the gradient path (docs/REFERENCE.md §1.4) meaningless.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scale:
    """Sizes of one model scale.

    Attributes:
        name: registry key.
        widths: output channels of the five VGG stages (conv1..conv5).
        fc_dim: width of the classifier's fc6/fc7 (and DeconvNet's fc6/fc7).
        bridge_dim: width of DecoupledNet's fc6-seg/fc7-seg bridging layers.
        input_size: the square training/inference size (a multiple of 32).
        fc6_kernel: fc6's kernel (no padding): score map side = input_size/32 - fc6_kernel + 1.
        encoder_bn: BN after every classifier VGG conv. Paper scale imports ImageNet VGG-16 (no
            BN, as the original); CPU scale trains from scratch, where a plain 13-conv VGG stalls
            at the label-prior loss (measured) -- DeconvNet added BN for the same reason.
    """

    name: str
    widths: tuple[int, ...]
    fc_dim: int
    bridge_dim: int
    input_size: int
    fc6_kernel: int
    encoder_bn: bool = False

    @property
    def c5(self) -> int:
        """Channels of pool5 (the last VGG width)."""
        return self.widths[-1]

    @property
    def pool5_size(self) -> int:
        """Side of pool5 at ``input_size``."""
        return self.input_size // 32

    @property
    def score_size(self) -> int:
        """Side of the class-score map at ``input_size``."""
        return self.pool5_size - self.fc6_kernel + 1


SCALES: dict[str, Scale] = {
    "paper": Scale("paper", (64, 128, 256, 512, 512), 4096, 2048, 320, 7),
    "cpu": Scale("cpu", (16, 32, 64, 128, 128), 1024, 512, 96, 2, encoder_bn=True),
}


def get_scale(name_or_scale: str | Scale) -> Scale:
    """Return the :class:`Scale` named ``name_or_scale`` (or the Scale itself)."""
    if isinstance(name_or_scale, Scale):
        return name_or_scale
    try:
        return SCALES[str(name_or_scale).lower()]
    except KeyError:
        raise ValueError(
            f"unknown model scale {name_or_scale!r}; choose one of {sorted(SCALES)}"
        ) from None
