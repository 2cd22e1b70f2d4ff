"""detpipe: VOC-labelled images in, a trained YOLO-style detector, its mAP and reports out."""

__version__ = "0.1.0"
