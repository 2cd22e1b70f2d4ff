"""Data in: dataset readers (VOC, COCO, YOLO), checks, images, annotation lines, splits, the training dataset."""
