"""`python -m detpipe predict SOURCE --weights models/best.pt`: detect objects in your own images.

SOURCE is an image, a folder (searched recursively; non-image files are skipped and counted), a
glob in quotes ("photos/**/*.jpg"), a video file, or a camera index (0). Results go to --out
(default runs/predict/exp, exp2, ...), never over the input:

    OUT/<same relative path as the input>   the image with its boxes drawn
    OUT/<video name>.mp4                     the annotated video (videos and cameras)
    OUT/labels/<name>.txt                    --save-txt: `class score x1 y1 x2 y2` per box in
                                             original pixels, one file per image (empty: no boxes),
                                             the format `python -m detpipe evaluate --det` scores;
                                             <name> is the relative path with / replaced by __
    OUT/crops/<class>/<name>_<k>.jpg         --save-crop: every box cut out of the original image

--weights takes a detpipe checkpoint (.pt) or a model from `python -m detpipe export` (.onnx).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..images import IMAGE_EXTENSIONS
from ..sources import Frame, Source, SourceError, open_source


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m detpipe predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="image, folder, glob, video file or camera index")
    p.add_argument("--weights", required=True, help="models/best.pt or an exported .onnx")
    p.add_argument("--out", help="output folder (default: runs/predict/expN, a new one each run)")
    p.add_argument("--conf", type=float, default=0.5, help="minimum score of a box (default 0.5)")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold (default 0.45)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--batch", type=int, default=8, help="images per forward pass (default 8; camera: 1)")
    p.add_argument("--imgsz", type=int, help="input size (default: the size the model was trained at)")
    p.add_argument("--max-det", type=int, default=100, help="at most this many boxes per image")
    p.add_argument("--save-txt", action="store_true", help="write OUT/labels/*.txt for `detpipe evaluate`")
    p.add_argument("--save-crop", action="store_true", help="write every box as OUT/crops/<class>/*.jpg")
    p.add_argument("--no-save", action="store_true", help="do not write drawn images or video")
    p.add_argument("--classes", help="only these classes, comma-separated (e.g. cat,dog)")
    p.add_argument("--max-frames", type=int, default=0, help="videos and cameras: stop after N frames")
    return p


def next_run_dir(root: Path = Path("runs/predict")) -> Path:
    """runs/predict/exp, then exp2, exp3, ... (the first name not taken)."""
    n = 1
    while (root / ("exp" if n == 1 else f"exp{n}")).exists():
        n += 1
    return root / ("exp" if n == 1 else f"exp{n}")


def txt_name(frame_name: str) -> str:
    """Flat, unique label file name: `sub/dir/img.jpg` -> `sub__dir__img.txt`."""
    return str(Path(frame_name).with_suffix("")).replace("\\", "/").replace("/", "__") + ".txt"


def image_out_name(frame_name: str) -> str:
    suffix = Path(frame_name).suffix.lower()
    return frame_name if suffix in IMAGE_EXTENSIONS else frame_name + ".jpg"


def video_name(source: Source) -> str:
    return f"{Path(source.spec).stem if source.kind == 'video' else 'camera' + source.spec}.mp4"


def check_not_overwriting(source: Source, out: Path) -> None:
    """Refuse an --out where a drawn image would land on an input file."""
    out_r = out.resolve()
    if source.kind in ("folder", "glob") and source.base is not None and source.base.resolve() == out_r:
        raise SourceError(f"--out {out} is the input folder: the drawn images would overwrite the inputs; "
                          "choose another folder (or leave --out out for runs/predict/expN)")
    inputs = {p.resolve() for p in source.input_paths()}
    targets = [(out_r / image_out_name(p.relative_to(source.base).as_posix() if source.base else p.name), p)
               for p in source.files]
    if source.kind == "video":
        targets.append((out_r / video_name(source), Path(source.spec)))
    for dest, p in targets:
        if dest.resolve() in inputs:
            raise SourceError(f"--out {out} would overwrite the input {p}; choose another folder")


class Writer:
    """Everything written per frame: drawn image / video frame, txt, crops; and the counts."""

    def __init__(self, out: Path, args: argparse.Namespace, class_names: list[str], source: Source) -> None:
        self.out, self.args, self.names, self.source = out, args, class_names, source
        self.video = None
        self.video_path = out / video_name(source)
        self.totals: Counter = Counter()
        self.frames = 0

    def write(self, frame: Frame, det: dict) -> dict[str, int]:
        from ..inference import count_by_class
        from ..plots_predictions import draw_detections

        self.frames += 1
        counts = count_by_class(det, self.names)
        self.totals.update(counts)
        if not self.args.no_save:
            drawn = draw_detections(frame.rgb, det["boxes"], det["labels"], det["scores"], self.names)
            if self.source.kind in ("video", "camera"):
                self._video_frame(np.asarray(drawn))
            else:
                dest = self.out / image_out_name(frame.name)
                dest.parent.mkdir(parents=True, exist_ok=True)
                drawn.save(dest, **({"quality": 95} if dest.suffix.lower() in (".jpg", ".jpeg") else {}))
        if self.args.save_txt:
            dest = self.out / "labels" / txt_name(frame.name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            lines = [f"{self.names[int(c)]} {s:.6f} {b[0]:.2f} {b[1]:.2f} {b[2]:.2f} {b[3]:.2f}\n"
                     for b, s, c in zip(det["boxes"], det["scores"], det["labels"])]
            dest.write_text("".join(lines), encoding="utf-8")
        if self.args.save_crop:
            self._crops(frame, det)
        return counts

    def _crops(self, frame: Frame, det: dict) -> None:
        h, w = frame.rgb.shape[:2]
        stem = txt_name(frame.name)[:-4]
        for k, (box, label) in enumerate(zip(det["boxes"], det["labels"])):
            x1, y1 = int(np.floor(box[0])), int(np.floor(box[1]))
            x2, y2 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
            if x2 - x1 < 1 or y2 - y1 < 1:
                continue
            dest = self.out / "crops" / self.names[int(label)] / f"{stem}_{k}.jpg"
            dest.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(frame.rgb[y1:y2, x1:x2]).save(dest, quality=95)

    def _video_frame(self, rgb: np.ndarray) -> None:
        import cv2
        if self.video is None:
            self.out.mkdir(parents=True, exist_ok=True)
            h, w = rgb.shape[:2]
            self.video = cv2.VideoWriter(str(self.video_path), cv2.VideoWriter_fourcc(*"mp4v"),
                                         self.source.fps, (w, h))
            if not self.video.isOpened():
                raise SourceError(f"{self.video_path}: OpenCV cannot write mp4 video here")
        self.video.write(np.ascontiguousarray(rgb[..., ::-1]))

    def close(self) -> None:
        if self.video is not None:
            self.video.release()


def batches(frames, size: int):
    chunk: list[Frame] = []
    for frame in frames:
        chunk.append(frame)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out) if args.out else next_run_dir()
    try:
        source = open_source(args.source, exclude=out, max_frames=args.max_frames)
        check_not_overwriting(source, out)
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from ..inference import Predictor, format_counts
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    try:
        predictor = Predictor(args.weights, args.device, args.conf, args.iou, args.max_det, classes, args.imgsz)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    writer = Writer(out, args, predictor.class_names, source)
    batch = 1 if source.kind == "camera" else max(1, args.batch)
    per_image = source.kind in ("image", "folder", "glob")
    show_bar = source.kind != "image"
    bar = tqdm(total=source.total, desc=f"predict {source.kind}", unit="img" if per_image else "frame",
               dynamic_ncols=True, mininterval=0.5, disable=not show_bar)
    start = time.perf_counter()
    try:
        for chunk in batches(source, batch):
            dets = predictor([f.rgb for f in chunk], batch)
            for frame, det in zip(chunk, dets):
                counts = writer.write(frame, det)
                if per_image:
                    tqdm.write(f"{frame.name}: {format_counts(counts)}")
            bar.update(writer.frames + len(source.unreadable) - bar.n)
    except KeyboardInterrupt:
        tqdm.write("interrupted: keeping what was written so far")
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        bar.close()
        writer.close()
    seconds = time.perf_counter() - start
    for path, reason in source.unreadable:
        print(f"skipped unreadable file {path}: {reason}", file=sys.stderr)
    what = "images" if per_image else "frames"
    print(f"{writer.frames} {what} in {seconds:.1f} s ({1000 * seconds / max(1, writer.frames):.1f} ms each, "
          f"batch {batch}, {args.weights}); boxes: {format_counts(dict(sorted(writer.totals.items())))}")
    if source.skipped:
        print(f"skipped {len(source.skipped)} non-image files (e.g. {source.skipped[0]})")
    if source.unreadable:
        print(f"skipped {len(source.unreadable)} unreadable files (listed above)")
    if not writer.frames and not source.unreadable:
        print(f"warning: {args.source} gave no images", file=sys.stderr)
    saved = [str(writer.video_path) if writer.video is not None else None,
             str(out / "labels") if args.save_txt else None, str(out / "crops") if args.save_crop else None]
    print(f"results in {out}" + "".join(f"; {s}" for s in saved if s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
