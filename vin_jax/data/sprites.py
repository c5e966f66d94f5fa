"""Seeded generator of long sprite videos (numpy only).

Constants here are shared with the evaluation (attribute consistency) so that both agree on identities.
"""
import numpy as np

# Named RGB colours a sprite can have; far apart so a detector can tell them apart after generation.
PALETTE = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 235),
    "yellow": (235, 215, 40),
    "magenta": (215, 50, 215),
    "cyan": (40, 215, 225),
}
COLOR_NAMES = tuple(PALETTE)
SHAPES = ("square", "disc", "triangle")
# Backgrounds are dark and low-saturation so sprites stand out.
BACKGROUNDS = {
    "black": (10, 10, 10),
    "grey": (60, 60, 60),
    "navy": (20, 20, 70),
}
BACKGROUND_NAMES = tuple(BACKGROUNDS)
