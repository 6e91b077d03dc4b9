"""Build dcqformat/cli/data/photo_crops.png, the embedded default dataset (run once, by hand).

Usage: python scripts/make_photo_crops.py SKIMAGE_DATA_DIR

SKIMAGE_DATA_DIR is the ``skimage/data`` folder of a scikit-image wheel (0.26.0 was used),
whose photos are public domain or CC0 (see its README.txt). 64 random crops of each of ten
photos, resized to 32x32, are tiled 32 to a row; tile k has class k // 64.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SOURCES = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
           "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "grass.png", "brick.png"]
CLASSES = ["astronaut", "cat", "coffee", "rocket", "motorcycle", "galaxies", "retina", "tissue",
           "grass", "brick"]
PER_CLASS, SIDE, PER_ROW = 64, 32, 32


def main(src: Path) -> None:
    rng = np.random.default_rng(2026)
    tiles = []
    for name in SOURCES:
        photo = Image.open(src / name).convert("RGB")
        w, h = photo.size
        for _ in range(PER_CLASS):
            s = int(rng.integers(48, min(w, h, 192)))
            x, y = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
            tiles.append(np.asarray(photo.crop((x, y, x + s, y + s)).resize((SIDE, SIDE), Image.LANCZOS)))
    rows = [np.concatenate(tiles[r : r + PER_ROW], axis=1) for r in range(0, len(tiles), PER_ROW)]
    out = Path(__file__).resolve().parents[1] / "dcqformat" / "cli" / "data"
    Image.fromarray(np.concatenate(rows, axis=0)).save(out / "photo_crops.png", optimize=True)
    info = {"name": "photo-crops", "classes": CLASSES, "per_class": PER_CLASS, "side": SIDE,
            "per_row": PER_ROW, "sources": SOURCES,
            "origin": "scikit-image 0.26.0 skimage/data (public domain / CC0 photos)"}
    (out / "photo_crops.json").write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
