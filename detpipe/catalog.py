"""What the model can be built from: backbone families, scales, necks and pretrained starts.

Names and numbers only, no torch at import: params.py validates params.yaml against this catalog,
and every stage imports params.py, so an edit of the network code must not make the data stages'
code deps (and their reruns) depend on it. torchvision's model list is read lazily, inside the
functions that need it (paid only when a model section is validated).
"""
from __future__ import annotations

# Ultralytics' (width, depth, max_channels) per scale, from yolov8.yaml and yolo11.yaml: they scale
# the channels (capped), the block repeats and the neck. detpipe's own cspdarknet and the PAN neck
# (256 x width channels, 3 x depth blocks) take YOLOv8's width and depth, without the cap.
YOLO_SCALES = {
    "yolov8": {"n": (0.25, 0.33, 1024), "s": (0.5, 0.33, 1024), "m": (0.75, 0.67, 768), "l": (1.0, 1.0, 512)},
    "yolo11": {"n": (0.25, 0.5, 1024), "s": (0.5, 0.5, 1024), "m": (1.0, 0.5, 512), "l": (1.0, 1.0, 512)},
}
SCALES = {k: v[:2] for k, v in YOLO_SCALES["yolov8"].items()}
# Ultralytics' layouts: the backbone (and neck) with its BatchNorm settings and 0-1 inputs, so weights
# converted by `detpipe import-weights` compute what they computed in Ultralytics.
YOLO_FAMILIES = tuple(YOLO_SCALES)
NECKS = ("pan",) + YOLO_FAMILIES
# torchvision classifier families the detector can cut at strides 8, 16 and 32, by how it cuts them.
RESNETS = ("resnet", "resnext", "wide_resnet")
SHUFFLENETS = ("shufflenet",)
REGNETS = ("regnet",)
SEQUENTIAL = ("mobilenet_v3", "efficientnet", "mobilenet_v2")
TORCHVISION_FAMILIES = RESNETS + SHUFFLENETS + REGNETS + SEQUENTIAL

PUBLISHED_KINDS = ("imagenet", "coco")
# torchvision detectors whose backbone is one of detpipe's torchvision backbones: their COCO weights
# start it. (weights enum, the backbone's key prefix in the file, its prefix in the classifier, the
# file's BatchNorm eps where it differs from the classifier's: FrozenBatchNorm2d's 1e-5.)
COCO_DETECTORS = {
    "resnet50": ("FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1", "backbone.body.", "", None),
    "mobilenet_v3_large": ("FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1", "backbone.body.", "features.", 1e-5),
}


def pan_width(scale: str, neck_channels: int = 0) -> int:
    """The PAN neck's channels (and the head's): 0 = 256 x the scale's width (n 64, s 128, m 192, l 256)."""
    return neck_channels or int(256 * SCALES[scale][0])


def backbone_names() -> tuple[str, ...]:
    """Every model.backbone the detector builds (params.yaml is validated against this)."""
    return ("cspdarknet",) + YOLO_FAMILIES + torchvision_backbones()


def torchvision_backbones() -> tuple[str, ...]:
    """torchvision's classifiers of the families the detector knows how to cut."""
    import torchvision  # lazily: see the module docstring
    models = torchvision.models.list_models(module=torchvision.models)
    return tuple(n for n in models if n.startswith(TORCHVISION_FAMILIES))


def imagenet_weights(backbone: str):
    """torchvision's default ImageNet weights enum member for the backbone, or None."""
    if not backbone.startswith(TORCHVISION_FAMILIES):
        return None
    import torchvision  # lazily: see the module docstring
    try:
        return torchvision.models.get_model_weights(backbone).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return None


def pretrained_choices(backbone: str) -> tuple[str, ...]:
    """The `model.pretrained` values that work with this backbone, besides the path of a checkpoint."""
    return (("none",) + (("imagenet",) if imagenet_weights(backbone) is not None else ())
            + (("coco",) if backbone in COCO_DETECTORS else ()))
