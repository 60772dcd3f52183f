"""The heatmap's color table and the threshold / opacity helpers behind the module's sliders.

The overlay uses **inferno**, a perceptually uniform colormap (lightness rises monotonically from
black through purple and orange to pale yellow, readable in grey scale and by colour-blind
readers), sampled at 256 entries: matplotlib's table, rounded to 8 bits, stored below as hex.
Heatmap values v in [0, 1] map to entry ``round(v * 255)``; entries below the display threshold
are fully transparent, so the CT shows through wherever the model found nothing.
"""

from __future__ import annotations

import logging
import math
from typing import Tuple

import numpy as np

from .errors import InvalidInputError

__all__ = [
    "TABLE_SIZE",
    "DEFAULT_THRESHOLD",
    "DEFAULT_OPACITY",
    "inferno_rgb",
    "colormap_rgba",
    "threshold_index",
    "check_threshold",
    "check_opacity",
    "threshold_mask",
    "window_level",
]

logger = logging.getLogger(__name__)

TABLE_SIZE = 256
#: Heatmap value below which the overlay is transparent, until the user moves the slider.
DEFAULT_THRESHOLD = 0.5
#: Foreground opacity of the overlay in the slice views.
DEFAULT_OPACITY = 0.6

#: matplotlib's "inferno", 256 entries of 8-bit RGB as hex (from matplotlib 3.x, values unchanged
#: since its introduction in 1.5).
_INFERNO_HEX = (
    "00000401000501010601010802010a02020c02020e03021004031204031405041706041907051b08051d09061f0a0722"
    "0b07240c08260d08290e092b10092d110a30120a32140b34150b37160b39180c3c190c3e1b0c411c0c431e0c451f0c48"
    "210c4a230c4c240c4f260c51280b53290b552b0b572d0b592f0a5b310a5c320a5e340a5f3609613809623909633b0964"
    "3d09653e0966400a67420a68440a68450a69470b6a490b6a4a0c6b4c0c6b4d0d6c4f0d6c510e6c520e6d540f6d550f6d"
    "57106e59106e5a116e5c126e5d126e5f136e61136e62146e64156e65156e67166e69166e6a176e6c186e6d186e6f196e"
    "71196e721a6e741a6e751b6e771c6d781c6d7a1d6d7c1d6d7d1e6d7f1e6c801f6c82206c84206b85216b87216b88226a"
    "8a226a8c23698d23698f24699025689225689326679526679727669827669a28659b29649d29649f2a63a02a63a22b62"
    "a32c61a52c60a62d60a82e5fa92e5eab2f5ead305dae305cb0315bb1325ab3325ab43359b63458b73557b93556ba3655"
    "bc3754bd3853bf3952c03a51c13a50c33b4fc43c4ec63d4dc73e4cc83f4bca404acb4149cc4248ce4347cf4446d04545"
    "d24644d34743d44842d54a41d74b3fd84c3ed94d3dda4e3cdb503bdd513ade5238df5337e05536e15635e25734e35933"
    "e45a31e55c30e65d2fe75e2ee8602de9612bea632aeb6429eb6628ec6726ed6925ee6a24ef6c23ef6e21f06f20f1711f"
    "f1731df2741cf3761bf37819f47918f57b17f57d15f67e14f68013f78212f78410f8850ff8870ef8890cf98b0bf98c0a"
    "f98e09fa9008fa9207fa9407fb9606fb9706fb9906fb9b06fb9d07fc9f07fca108fca309fca50afca60cfca80dfcaa0f"
    "fcac11fcae12fcb014fcb216fcb418fbb61afbb81dfbba1ffbbc21fbbe23fac026fac228fac42afac62df9c72ff9c932"
    "f9cb35f8cd37f8cf3af7d13df7d340f6d543f6d746f5d949f5db4cf4dd4ff4df53f4e156f3e35af3e55df2e661f2e865"
    "f2ea69f1ec6df1ed71f1ef75f1f179f2f27df2f482f3f586f3f68af4f88ef5f992f6fa96f8fb9af9fc9dfafda1fcffa4"
)


def inferno_rgb() -> np.ndarray:
    """The inferno table: float64 RGB in [0, 1], shape [256, 3]."""
    raw = bytes.fromhex(_INFERNO_HEX)
    return np.frombuffer(raw, dtype=np.uint8).reshape(TABLE_SIZE, 3).astype(np.float64) / 255.0


def check_threshold(threshold: float) -> float:
    """A display threshold as a float in [0, 1].

    Raises:
        InvalidInputError: not a finite number in [0, 1].
    """
    try:
        value = float(threshold)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"threshold must be a number in [0, 1], got {threshold!r}") from err
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidInputError(f"threshold must be a number in [0, 1], got {threshold!r}")
    return value


def check_opacity(opacity: float) -> float:
    """An overlay opacity as a float in [0, 1].

    Raises:
        InvalidInputError: not a finite number in [0, 1].
    """
    try:
        value = float(opacity)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"opacity must be a number in [0, 1], got {opacity!r}") from err
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidInputError(f"opacity must be a number in [0, 1], got {opacity!r}")
    return value


def threshold_index(threshold: float) -> int:
    """The first table entry at or above ``threshold`` (value v maps to entry ``round(v * 255)``)."""
    value = check_threshold(threshold)
    return int(math.ceil(value * (TABLE_SIZE - 1) - 1e-9))


def colormap_rgba(threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """The overlay's color table: inferno RGB with alpha 0 below ``threshold`` and 1 from it on.

    Returns:
        float64 RGBA in [0, 1], shape [256, 4]; entry n shows heatmap value n / 255.
    """
    table = np.ones((TABLE_SIZE, 4))
    table[:, :3] = inferno_rgb()
    table[:threshold_index(threshold), 3] = 0.0
    return table


def threshold_mask(values: np.ndarray, threshold: float) -> np.ndarray:
    """uint8 mask (1 where ``values >= threshold``, NaN excluded), same shape as ``values``.

    Raises:
        InvalidInputError: a threshold outside [0, 1] (a threshold of 0 would mark every voxel).
    """
    value = check_threshold(threshold)
    if value <= 0.0:
        raise InvalidInputError("a threshold of 0 marks every voxel: choose a value above 0")
    values = np.asarray(values)
    with np.errstate(invalid="ignore"):
        return (values >= value).astype(np.uint8)


def window_level(value_range: Tuple[float, float] = (0.0, 1.0)) -> Tuple[float, float]:
    """(window, level) that spreads ``value_range`` over the whole table (for the display node)."""
    low, high = float(value_range[0]), float(value_range[1])
    if not high > low:
        raise InvalidInputError(f"value range must be increasing, got {value_range!r}")
    return high - low, (high + low) / 2.0
