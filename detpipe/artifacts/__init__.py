"""The files stages hand each other, one module per artifact, each with one writer and one strict reader.

A contract is a pydantic model (`base.Artifact`): `write(path)` is the only way the file is
written and `read(path)` the only way it is read; a missing, unknown or mistyped field fails the
read with one line naming the file, the field and the stage to rerun. Tabular files (the image
manifests, the detections CSV) have the same pair of functions over their rows.
"""
