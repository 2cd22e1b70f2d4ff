"""Builders for tiny VOC/COCO datasets in tests (not a test module)."""
from __future__ import annotations

import json
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image

CLASSES = ("circle", "square", "triangle", "star")


def voc_xml(filename: str | None, size: tuple[int, int] | None, objects: list) -> str:
    """A VOC annotation. objects: (name, (x1, y1, x2, y2)[, difficult]) with coordinates as text
    or numbers."""
    parts = ["<annotation>", "<folder>VOC2007</folder>"]
    if filename is not None:
        parts.append(f"<filename>{escape(filename)}</filename>")
    if size is not None:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    for obj in objects:
        name, box = obj[0], obj[1]
        diff = obj[2] if len(obj) > 2 else 0
        coords = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
        parts.append(f"<object><name>{escape(name)}</name><difficult>{diff}</difficult>"
                     f"<bndbox>{coords}</bndbox></object>")
    return "\n".join(parts + ["</annotation>"])


def write_image(path: Path, size: tuple[int, int] = (64, 48), mode: str = "RGB", exif: int | None = None,
                seed: int = 0) -> Path:
    """A small noisy image in any mode; `exif` sets the EXIF orientation tag (JPEG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr).convert(mode) if mode not in ("I;16",) else \
        Image.fromarray(arr[..., 0].astype(np.uint16) * 257)
    kwargs = {}
    if exif is not None:
        ex = Image.Exif()
        ex[0x0112] = exif
        kwargs["exif"] = ex.tobytes()
    img.save(path, **kwargs)
    return path


def make_voc(root: Path, items: dict[str, dict], classes=CLASSES) -> Path:
    """items: stem -> dict(objects=[...], size=(w, h), ext='.jpg', mode='RGB', filename=None,
    xml=None (raw text overrides), image=True). Returns root."""
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    for stem, spec in items.items():
        size = spec.get("size", (64, 48))
        name = spec.get("filename", stem + spec.get("ext", ".jpg"))
        if spec.get("image", True):
            write_image(root / "JPEGImages" / (stem + spec.get("ext", ".jpg")), size, spec.get("mode", "RGB"),
                        spec.get("exif"))
        if spec.get("xml_missing"):
            continue
        text = spec.get("xml") if spec.get("xml") is not None else voc_xml(
            name, spec.get("declared", size), spec.get("objects", [("circle", (5, 5, 30, 30))]))
        data = text if isinstance(text, bytes) else text.encode("utf-8")
        (root / "Annotations" / f"{stem}.xml").write_bytes(data)
    return root


def write_coco(path: Path, records: list[dict], classes=CLASSES) -> Path:
    """records: dict(file_name, width, height, boxes=[(name, x1, y1, x2, y2, crowd)])."""
    cats = [{"id": i + 1, "name": c} for i, c in enumerate(classes)]
    images, anns = [], []
    for k, r in enumerate(records, 1):
        images.append({"id": k, "file_name": r["file_name"], "width": r["width"], "height": r["height"]})
        for name, x1, y1, x2, y2, crowd in r["boxes"]:
            anns.append({"id": len(anns) + 1, "image_id": k, "category_id": classes.index(name) + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": crowd})
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}), encoding="utf-8")
    return path
