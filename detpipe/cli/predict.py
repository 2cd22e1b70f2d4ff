"""`detpipe predict SOURCE`: detect objects in your own images (the model: --weights, default
models/best.pt).

SOURCE is an image, a folder (searched recursively, symlinked folders followed once; non-image
files are skipped and counted), a glob in quotes ("photos/**/*.jpg"), a list file (.txt: one
image per line, e.g. the split file data/splits/test.txt), a video file, or a camera index (0).
Results go to --out (default runs/predict/exp, exp2, ...), never over the input:

    OUT/<same relative path as the input>   the image with its boxes >= --conf drawn
    OUT/<video name>.mp4                     the annotated video (H.264 where OpenCV can write it)
    OUT/labels/<name>.txt                    --save-txt: `class score x1 y1 x2 y2` per box in
                                             original pixels, EVERY box down to --txt-conf (0.001,
                                             as the pipeline's map stage), one file per image:
                                             what `detpipe evaluate --det` needs for a true mAP;
                                             <name> is the relative path with / replaced by __
    OUT/gt/<name>.txt                        --save-txt with a list file whose lines carry boxes
                                             (a split file): its ground truth, for `evaluate --gt`
    OUT/crops/<class>/<name>_<k>.jpg         --save-crop: every box >= --conf cut out of the image
    OUT/predict.json                         the settings and any renamed outputs

Two inputs that would share an output name (one.jpg and one.png; sub/a.jpg and sub__a.jpg) get
distinct names (one_png.txt), printed at the start; nothing is overwritten. Class names in txt
files have spaces replaced by _ (the evaluate format splits on spaces).

The pipeline's test mAP50, from the command line:
    detpipe predict data/splits/test.txt --save-txt --no-save --out runs/test
    detpipe evaluate --gt runs/test/gt --det runs/test/labels --out runs/test/map

--weights takes a detpipe checkpoint (.pt) or a model from `detpipe export` (.onnx).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..data.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, PixelLimit
from ..params import MapParams, PredictParams
from ..infer.decode import above
from ..safe_names import UniqueNames, safe_name, unique_safe_names
from ..infer.sources import Frame, Source, SourceError, open_source
from .common import CliError, add_backend_arg, add_weights_arg, prog, resolve_weights

# The pipeline's defaults, so the command and the predict/map stages give the same boxes.
PIPELINE = PredictParams()
MAP_CONF = MapParams().confidence
RESERVED = {"labels", "gt", "crops"}  # OUT's own folders


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog("predict"), description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="image, folder, glob, list file (.txt), video file or camera index")
    add_weights_arg(p)
    p.add_argument("--out", help="output folder (default: runs/predict/expN, a new one each run)")
    p.add_argument("--conf", type=float, default=PIPELINE.confidence,
                   help=f"minimum score of a drawn, counted or cropped box (default {PIPELINE.confidence})")
    p.add_argument("--txt-conf", type=float, default=MAP_CONF,
                   help=f"minimum score of a box in labels/*.txt (default {MAP_CONF}, as the map stage: mAP "
                   "needs the low-score boxes too)")
    p.add_argument("--iou", type=float, default=PIPELINE.nms_iou, help=f"NMS IoU threshold (default {PIPELINE.nms_iou})")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    add_backend_arg(p, PIPELINE.backend)
    p.add_argument("--batch", type=int, default=PIPELINE.batch_size,
                   help=f"images per forward pass (default {PIPELINE.batch_size}; camera: 1)")
    p.add_argument("--imgsz", type=int, help="input size (default: the size the model was trained at)")
    p.add_argument("--max-det", type=int, default=PIPELINE.max_det,
                   help=f"at most this many boxes per image (default {PIPELINE.max_det})")
    p.add_argument("--save-txt", action="store_true", help="write OUT/labels/*.txt for `detpipe evaluate`")
    p.add_argument("--save-crop", action="store_true", help="write every box as OUT/crops/<class>/*.jpg")
    p.add_argument("--no-save", action="store_true", help="do not write drawn images or video")
    p.add_argument("--classes", help="only these classes, comma-separated (e.g. cat,dog)")
    p.add_argument("--max-frames", type=int, default=0, help="videos and cameras: stop after N frames")
    p.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"skip images of more pixels (width x height), refused from their header before decoding "
                   f"(default {DEFAULT_MAX_PIXELS}, params.yaml's data.max_image_pixels)")
    return p


def next_run_dir(root: Path = Path("runs/predict")) -> Path:
    """runs/predict/exp, then exp2, exp3, ... (the first name not taken)."""
    n = 1
    while (root / ("exp" if n == 1 else f"exp{n}")).exists():
        n += 1
    return root / ("exp" if n == 1 else f"exp{n}")


def video_name(source: Source) -> str:
    return safe_name(f"{Path(source.spec).stem if source.kind == 'video' else 'camera' + source.spec}.mp4")


class OutputNames:
    """Every name an input gets under OUT, safe (detpipe.safe_names) and never shared: `drawn`
    keeps the relative path (as safe components), `stem` is the flat name of its txt files and
    crops (`sub/dir/img.jpg` -> `sub__dir__img`). A later input whose name is taken gets its
    extension appended (`one.png` -> `one_png`), then a number."""

    def __init__(self) -> None:
        self.drawn_pool, self.stem_pool = UniqueNames(), UniqueNames()
        self.names: dict[str, tuple[str, str]] = {}

    def add(self, rel: str) -> tuple[str, str]:
        if rel not in self.names:
            parts = [safe_name(p) for p in PurePosixPath(rel).parts] or ["unnamed"]
            suffix = PurePosixPath(parts[-1]).suffix
            suffix = suffix if suffix.lower() in IMAGE_EXTENSIONS else ""  # video frames: stem_000123
            parts[-1] = parts[-1][: len(parts[-1]) - len(suffix)]
            flat = safe_name("__".join(parts))
            if len(parts) > 1 and parts[0].casefold() in RESERVED:
                parts[0] += "_input"  # an input folder named like an output folder stays apart from it
            head = "/".join(parts)
            drawn = self.drawn_pool.claim(head, rel, suffix or ".jpg", alternative=f"{head}_{suffix[1:]}" if suffix else "")
            stem = self.stem_pool.claim(flat, rel, alternative=f"{flat}_{suffix[1:].lower()}" if suffix else "")
            self.names[rel] = (drawn, stem)
        return self.names[rel]

    def renamed(self) -> dict[str, dict[str, str]]:
        """{input: {"drawn": name, "stem": name}} for the inputs whose names were changed."""
        changed = {}
        for rel, (drawn, stem) in self.names.items():
            image = PurePosixPath(rel).suffix.lower() in IMAGE_EXTENSIONS
            natural = rel if image else rel + ".jpg"
            flat = (str(PurePosixPath(rel).with_suffix("")) if image else rel).replace("/", "__")
            if drawn != natural or stem != flat:
                changed[rel] = {"drawn": drawn, "stem": stem}
        return changed


def check_not_overwriting(source: Source, out: Path, names: OutputNames) -> None:
    """Refuse an --out where a drawn image would land on an input file."""
    out_r = out.resolve()
    if source.kind in ("folder", "glob", "list") and source.base is not None and source.base.resolve() == out_r:
        raise SourceError(f"--out {out} is the input folder: the drawn images would overwrite the inputs; "
                          "choose another folder (or leave --out out for runs/predict/expN)")
    inputs = {p.resolve() for p in source.input_paths()}
    targets = [(out_r / names.add(rel_name(source, p))[0], p) for p in source.files]
    if source.kind == "video":
        targets.append((out_r / video_name(source), Path(source.spec)))
    for dest, p in targets:
        if dest.resolve() in inputs:
            raise SourceError(f"--out {out} would overwrite the input {p}; choose another folder")


def rel_name(source: Source, path: Path) -> str:
    return path.relative_to(source.base).as_posix() if source.base else path.name


def txt_class(name: str) -> str:
    return name.replace(" ", "_")


def truth_lines(record, names: list[str]) -> str:
    """Ground truth in the evaluate format: `class x1 y1 x2 y2 [difficult]` per object."""
    return "".join(f"{txt_class(names[int(c)])} {' '.join(np.format_float_positional(v, trim='-') for v in b)}"
                   f"{' difficult' if d else ''}\n" for b, c, d in zip(record.boxes, record.labels, record.difficult))


class Writer:
    """Everything written per frame: drawn image / video frame, txt, crops; and the counts."""

    def __init__(self, out: Path, args: argparse.Namespace, class_names: list[str], source: Source,
                 names: OutputNames) -> None:
        self.out, self.args, self.names, self.source, self.outputs = out, args, class_names, source, names
        self.class_dirs = unique_safe_names(class_names)
        self.video = None
        self.video_path = out / video_name(source)
        self.video_note: str | None = None
        self.codec: str | None = None
        self.totals: Counter = Counter()
        self.frames = 0

    def write(self, frame: Frame, det_all: dict) -> dict[str, int]:
        from ..infer.predictor import count_by_class
        from ..reports.prediction_grid import draw_detections

        self.frames += 1
        det = above(det_all, self.args.conf)
        counts = count_by_class(det, self.names)
        self.totals.update(counts)
        drawn_name, stem = self.outputs.add(frame.name)
        if not self.args.no_save:
            drawn = draw_detections(frame.rgb, det["boxes"], det["labels"], det["scores"], self.names)
            if self.source.kind in ("video", "camera"):
                self._video_frame(np.asarray(drawn))
            else:
                dest = self.out / drawn_name
                dest.parent.mkdir(parents=True, exist_ok=True)
                drawn.save(dest, **({"quality": 95} if dest.suffix.lower() in (".jpg", ".jpeg") else {}))
        if self.args.save_txt:
            self._txt(frame, above(det_all, self.args.txt_conf), stem)
        if self.args.save_crop:
            self._crops(frame, det, stem)
        return counts

    def _txt(self, frame: Frame, det: dict, stem: str) -> None:
        dest = self.out / "labels" / f"{stem}.txt"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text("".join(f"{txt_class(self.names[int(c)])} {s:.6f} {b[0]:.2f} {b[1]:.2f} {b[2]:.2f} {b[3]:.2f}\n"
                                for b, s, c in zip(det["boxes"], det["scores"], det["labels"])), encoding="utf-8")
        if self.source.truth is not None and frame.path in self.source.truth:
            gt = self.out / "gt" / f"{stem}.txt"
            gt.parent.mkdir(parents=True, exist_ok=True)
            gt.write_text(truth_lines(self.source.truth[frame.path], self.names), encoding="utf-8")

    def _crops(self, frame: Frame, det: dict, stem: str) -> None:
        h, w = frame.rgb.shape[:2]
        for k, (box, label) in enumerate(zip(det["boxes"], det["labels"])):
            x1, y1 = int(np.floor(box[0])), int(np.floor(box[1]))
            x2, y2 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
            if x2 - x1 < 1 or y2 - y1 < 1:
                continue
            dest = self.out / "crops" / self.class_dirs[int(label)] / f"{stem}_{k}.jpg"
            dest.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(frame.rgb[y1:y2, x1:x2]).save(dest, quality=95)

    def _video_frame(self, rgb: np.ndarray) -> None:
        from ..infer.video import open_video_writer
        if self.video is None:
            h, w = rgb.shape[:2]
            self.video, self.codec, self.video_note = open_video_writer(self.video_path, self.source.fps, (w, h))
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


def check_truth(source: Source, class_names: list[str]) -> None:
    """A list file's class indices must exist in the model."""
    if source.truth is None:
        return
    top = max((int(r.labels.max()) for r in source.truth.values() if len(r)), default=-1)
    if top >= len(class_names):
        raise SourceError(f"{source.spec}: class index {top} in the boxes, but the model knows {len(class_names)} "
                          f"classes ({', '.join(class_names)}); is it the split file of this model's dataset?")


def print_renamed(names: OutputNames) -> None:
    renamed = names.renamed()
    if renamed:
        print(f"{len(renamed)} input(s) would share an output name with another; written under distinct names:")
        for rel, got in renamed.items():
            print(f"  {rel} -> {got['drawn']} (txt/crops: {got['stem']})")


def write_run_record(out: Path, args: argparse.Namespace, weights: str, names: OutputNames, frames: int) -> None:
    record = {"source": args.source, "weights": weights, "conf": args.conf, "txt_conf": args.txt_conf,
              "iou": args.iou, "max_det": args.max_det, "imgsz": args.imgsz, "classes": args.classes,
              "images_or_frames": frames, "renamed": names.renamed()}
    (out / "predict.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag, value in (("--conf", args.conf), ("--txt-conf", args.txt_conf), ("--iou", args.iou)):
        if not 0.0 <= value <= 1.0:
            parser.error(f"{flag} must be within 0..1, got {value}")
    if args.max_image_pixels < 1:
        parser.error(f"--max-image-pixels must be a positive number of pixels, got {args.max_image_pixels}")
    out = Path(args.out) if args.out else next_run_dir()
    names = OutputNames()
    try:
        weights = resolve_weights(args.weights)
        source = open_source(args.source, exclude=out, max_frames=args.max_frames,
                             pixel_limit=PixelLimit(args.max_image_pixels, "--max-image-pixels"))
        check_not_overwriting(source, out, names)
    except (CliError, SourceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from ..infer.backends import leave_cpu_to
    from ..infer.predictor import Predictor, format_counts
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    # One inference serves both thresholds: boxes >= --conf are a subset of those >= --txt-conf.
    nms_conf = min(args.conf, args.txt_conf) if args.save_txt else args.conf
    try:
        predictor = Predictor(weights, args.device, nms_conf, args.iou, args.max_det, classes, args.imgsz,
                              backend=args.backend)
        leave_cpu_to(predictor.backend)
        check_truth(source, predictor.class_names)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    print_renamed(names)
    writer = Writer(out, args, predictor.class_names, source, names)
    batch = 1 if source.kind == "camera" else max(1, args.batch)
    per_image = source.kind in ("image", "folder", "glob", "list")
    bar = tqdm(total=source.total, desc=f"predict {source.kind}", unit="img" if per_image else "frame",
               dynamic_ncols=True, mininterval=0.5, disable=source.kind == "image")
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
    write_run_record(out, args, weights, names, writer.frames)
    for path, reason in source.unreadable:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    what = "images" if per_image else "frames"
    print(f"{writer.frames} {what} in {seconds:.1f} s ({1000 * seconds / max(1, writer.frames):.1f} ms each, "
          f"batch {batch}, {weights}); boxes >= {args.conf}: {format_counts(dict(sorted(writer.totals.items())))}")
    if source.skipped:
        print(f"skipped {len(source.skipped)} non-image files (e.g. {source.skipped[0]})")
    if source.unreadable:
        print(f"skipped {len(source.unreadable)} unreadable files (listed above)")
    if not writer.frames and not source.unreadable:
        print(f"warning: {args.source} gave no images", file=sys.stderr)
    if writer.video_note:
        print(writer.video_note)
    txt = f"{out / 'labels'} (boxes >= {args.txt_conf})" if args.save_txt else None
    gt = str(out / "gt") + " (ground truth of the list)" if args.save_txt and source.truth is not None else None
    saved = [str(writer.video_path) if writer.video is not None else None, txt, gt,
             str(out / "crops") if args.save_crop else None]
    print(f"results in {out}" + "".join(f"; {s}" for s in saved if s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
