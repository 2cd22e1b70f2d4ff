"""Safe Pascal VOC XML parsing into source-neutral raw items.

Annotation files come from strangers (downloaded datasets, labelling services), so the parser
never resolves entities, never touches the network, keeps libxml2's size limits (huge_tree off)
and refuses any document that declares entities or an external DTD: an external entity could read
local files or make requests, and a billion-laughs expansion could exhaust memory.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

_INT = re.compile(r"^[+-]?\d+$")
_ENTITY_DECL = re.compile(rb"<!ENTITY", re.IGNORECASE)


class XmlError(ValueError):
    """An annotation file cannot be used. `kind` is a short machine name, str() the message."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class RawObject:
    """One labelled object as written: `box` xyxy floats, or None with `problem` saying why."""

    name: str
    box: tuple[float, float, float, float] | None
    difficult: bool = False
    problem: str | None = None
    float_coords: bool = False


@dataclass(frozen=True)
class RawItem:
    """One image's annotation from any source (VOC XML, COCO JSON, YOLO txt), before any checking."""

    source: str                        # the annotation file (named in every message)
    filename: str | None               # the image file name as written, or None
    size: tuple[int, int] | None       # declared (width, height), or None
    objects: tuple[RawObject, ...]
    normalised: bool = False           # boxes are 0..1 of the displayed image (YOLO txt), not pixels


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False,
                           load_dtd=False, dtd_validation=False, remove_pis=True)


def _refuse_dtd(root: etree._Element, source: str) -> None:
    """Refuse documents whose DOCTYPE declares entities or names an external DTD."""
    docinfo = root.getroottree().docinfo
    dtd = docinfo.internalDTD
    if (dtd is not None and any(True for _ in dtd.iterentities())) or docinfo.system_url:
        raise XmlError("xml_entities", f"{source}: the XML declares entities or an external DTD "
                       "(<!DOCTYPE ...>); refused, nothing expanded or fetched. Fix: remove the "
                       "DOCTYPE block; VOC annotations never need one.")


def parse_xml_bytes(data: bytes, source: str) -> etree._Element:
    """Parse untrusted XML safely; raises XmlError (empty, malformed, entities)."""
    if not data.strip():
        raise XmlError("empty_xml", f"{source}: the file is empty. Fix: delete it, or write an "
                       "<annotation> with <filename> and no <object> for a background image.")
    if _ENTITY_DECL.search(data):
        raise XmlError("xml_entities", f"{source}: the XML declares entities (<!ENTITY ...>); "
                       "refused, nothing expanded or fetched (external entities and billion-laughs "
                       "expansions are attacks). Fix: remove the DOCTYPE block.")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise XmlError("malformed_xml", f"{source}: malformed XML ({exc}). Fix: repair or "
                       "re-export the file from the labelling tool.") from None
    _refuse_dtd(root, source)
    return root


def _number(text: str | None) -> float | None:
    try:
        value = float(text.strip()) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _object(el: etree._Element) -> RawObject:
    """One <object>: name, bndbox as floats (or a problem), difficult flag."""
    name = el.findtext("name")
    difficult = (el.findtext("difficult") or "0").strip() not in ("0", "", "false", "False")
    if name is None or not name.strip():
        return RawObject("", None, difficult, "object without a <name>")
    texts = [el.findtext(f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")]
    values = [_number(t) for t in texts]
    if any(v is None for v in values):
        return RawObject(name, None, difficult, f"missing or non-numeric <bndbox> values {texts}")
    is_float = any(not _INT.match(t.strip()) for t in texts)
    return RawObject(name, tuple(values), difficult, None, is_float)


def _size(root: etree._Element) -> tuple[int, int] | None:
    w, h = _number(root.findtext("size/width")), _number(root.findtext("size/height"))
    return (int(w), int(h)) if w and h and w > 0 and h > 0 else None


def parse_voc(path: str | Path, source: str | None = None) -> RawItem:
    """Parse one VOC annotation file. `source` is the name used in messages (default: path)."""
    source = source or str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise XmlError("unreadable_xml", f"{source}: cannot read ({exc.strerror}).") from None
    root = parse_xml_bytes(data, source)
    if etree.QName(root).localname != "annotation":
        raise XmlError("malformed_xml", f"{source}: root element is <{etree.QName(root).localname}>,"
                       " expected <annotation>. Fix: is this a Pascal VOC annotation file?")
    filename = (root.findtext("filename") or "").strip() or None
    objects = tuple(_object(el) for el in root.findall("object"))
    return RawItem(source, filename, _size(root), objects)
