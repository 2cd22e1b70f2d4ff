"""One colour per class, shared by every figure and drawn image so a class looks the same everywhere."""
from __future__ import annotations

# Tableau-20 ordering: distinguishable on white and on photos, and 20 classes before repeating.
_PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
]


def class_color(index: int) -> tuple[int, int, int]:
    """RGB 0-255 colour of class `index`."""
    return _PALETTE[index % len(_PALETTE)]


def class_color_mpl(index: int) -> tuple[float, float, float]:
    """The same colour as matplotlib's 0-1 RGB tuple."""
    r, g, b = class_color(index)
    return (r / 255, g / 255, b / 255)
