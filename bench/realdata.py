"""detpipe on datasets its defaults were not tuned on (issue #19): one table per dataset of test
mAP50, mAP50-95, AP by object size, epochs and wall time for each named configuration.

    python bench/realdata.py run aerial old --epochs 30   # one timed pipeline run (annotate ... report)
    python bench/realdata.py table                        # one table per dataset of every recorded run
    python bench/realdata.py list                         # datasets, configurations and their settings
    python bench/realdata.py curve photo old pretrained   # val mAP50 per epoch of recorded runs, side by side

Datasets come from scripts/make_realdata.py (generated into data_realdata/ when missing): `aerial`
(many objects under 16 px), `photo` (photo-like pictures of shaded solids) and `solids` (the photo
world with other classes: the pretraining source). Configurations:

    old         the defaults before #19, pinned (320 px, 3 frozen + 80 unfrozen epochs, from scratch)
    imgsz-auto  old with model.imgsz: auto (input size from the train split's box sizes)
    p2          old with model.p2: true (a stride-4 detection level)
    p2-auto     old with both: the stride-4 level and the input size it needs (auto targets 8 px with p2)
    pretrain    old, on solids: the run whose best.pt `pretrained` starts from
    pretrained  old with model.pretrained: the solids pretrain run's models/best.pt

A configuration whose settings this detpipe's params.py does not accept (imgsz auto and p2 before
they land) is skipped with one line naming the setting, as detpipe's own validation words it.

A run writes params.yaml (the repo's, with the dataset's root and classes and the configuration's
settings) into a fresh run folder <work>/<dataset>-<config>/ (default runs/realdata/, git-ignored)
and runs every stage's command from the stage table (detpipe/pipeline/table.py) there, in table
order, as `dvc repro` does, with the repo's code and a private checkpoint folder. Its result
(test mAP50 and mAP50-95, COCO AP by size, per-epoch val mAP50, stage wall times, the command) is
added to bench/realdata_results.json, which is committed. Run one at a time on a quiet machine:

    /work/bin/quiet python bench/realdata.py run aerial old --epochs 30
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detpipe.cpus import usable_cpus  # noqa: E402
from detpipe.params import Params, ParamsError, from_dict  # noqa: E402
from detpipe.pipeline.table import STAGES  # noqa: E402
from scripts.realworlds import WORLDS  # noqa: E402

DATA = ROOT / "data_realdata"
WORK = ROOT / "runs" / "realdata"
RESULTS = ROOT / "bench" / "realdata_results.json"
# name -> (world, images, seed): make_realdata.py's docstring lists the same commands.
DATASETS = {"aerial": ("aerial", 300, 0), "photo": ("photo", 300, 0), "solids": ("solids", 1200, 1)}
SOURCE = ("solids", "pretrain")     # the run whose best.pt the `pretrained` configuration starts from
OLD = {"model.imgsz": 320, "train.freeze_epochs": 3, "train.unfreeze_epochs": 80}
# name -> (what it is, settings on top of the repo's params.yaml); None stands for the source run's best.pt
CONFIGS: dict[str, tuple[str, dict]] = {
    "old": ("the defaults before #19 (320 px, 3 + 80 epochs, from scratch)", OLD),
    "imgsz-auto": ("old with the input size read from the train split's boxes", {**OLD, "model.imgsz": "auto"}),
    "p2": ("old with a stride-4 detection level", {**OLD, "model.p2": True}),
    "p2-auto": ("old with a stride-4 level and the input size read from the train split's boxes",
                {**OLD, "model.p2": True, "model.imgsz": "auto"}),
    "pretrain": ("old, on solids: the pretrained start of `pretrained`", OLD),
    "pretrained": ("old, starting from the solids pretrain run's best.pt", {**OLD, "model.pretrained": None}),
}


class Skip(Exception):
    """A configuration this detpipe cannot run (a setting it lacks, a missing source run)."""


def source_weights(work_root: Path) -> Path:
    return work_root / f"{SOURCE[0]}-{SOURCE[1]}" / "models" / "best.pt"


def settings(dataset: str, config: str, epochs: int | None, work_root: Path) -> dict:
    """The dotted params.yaml settings of a run: the dataset's root and classes, then the
    configuration's, then the epoch override (unfrozen epochs)."""
    root = (Path("data_realdata") / dataset / "VOCdevkit" / "VOC2007").as_posix()
    out = {"data.root": root, "data.classes": list(WORLDS[DATASETS[dataset][0]].classes)}
    for key, value in CONFIGS[config][1].items():
        out[key] = str(source_weights(work_root)) if value is None else value
    if epochs is not None:
        out["train.unfreeze_epochs"] = epochs
    return out


def apply(params: dict, dotted: dict) -> dict:
    """A copy of a params tree with dotted keys set (missing sections created)."""
    tree = json.loads(json.dumps(params))
    for key, value in dotted.items():
        *path, last = key.split(".")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return tree


def check(params: dict, changed: dict, where: str) -> None:
    """Validate a params tree with detpipe's own rules. Refused because of a setting the
    configuration changes (a feature this detpipe lacks): Skip with detpipe's line. Any other
    refusal is a real error and propagates."""
    try:
        from_dict(Params, params, where)
    except ParamsError as exc:
        named = [key for key in changed if key in str(exc)]
        if not named:
            raise
        raise Skip(f"this detpipe does not take {', '.join(named)} ({exc})") from None


def generator_hash() -> str:
    """sha256 of the generator's source: a changed generator regenerates the data."""
    h = hashlib.sha256()
    for path in sorted((ROOT / "scripts" / "realworlds").glob("*.py")) + [ROOT / "scripts" / "synth.py"]:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def ensure_data(dataset: str) -> dict:
    """Generate the dataset unless the same generator and arguments wrote it; its counts and box
    sizes (make_realdata.py's output, kept in data_realdata/<dataset>.json)."""
    world, n, seed = DATASETS[dataset]
    stamp = DATA / f"{dataset}.json"
    key = {"world": world, "images": n, "seed": seed, "generator": generator_hash()}
    if stamp.is_file():
        known = json.loads(stamp.read_text(encoding="utf-8"))
        if known["key"] == key:
            return known["counts"]
    args = ["--world", world, "--out", str(DATA / dataset), "--n", str(n), "--seed", str(seed)]
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_realdata.py"), *args], check=True,
                         capture_output=True, text=True).stdout
    counts, _ = json.JSONDecoder().raw_decode(out)   # the counts, then what to put in params.yaml
    stamp.write_text(json.dumps({"key": key, "counts": counts}, indent=1) + "\n", encoding="utf-8")
    return counts


def prepare(dataset: str, config: str, epochs: int | None, work_root: Path) -> tuple[Path, dict, dict]:
    """A fresh run folder with params.yaml and a link to the data (relative paths, as in a repo);
    Skip, before touching anything, when the configuration cannot run here."""
    if config == "pretrained" and not source_weights(work_root).is_file():
        raise Skip(f"no {source_weights(work_root)}: run `python bench/realdata.py run {' '.join(SOURCE)}` first")
    if config == "pretrain" and dataset != SOURCE[0]:
        raise Skip(f"pretrain runs on {SOURCE[0]} (the pretraining source), not {dataset}")
    dotted = settings(dataset, config, epochs, work_root)
    params = apply(yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8")), dotted)
    check(params, {k: v for k, v in dotted.items() if not k.startswith("data.")}, f"{dataset}/{config} params")
    work = work_root / f"{dataset}-{config}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    counts = ensure_data(dataset)
    (work / "data_realdata").symlink_to(DATA, target_is_directory=True)
    return work, dotted, counts


def run_stages(work: Path) -> dict[str, float]:
    """Every stage's command in table order, in `work`; wall seconds per stage. The joined output
    goes to work/bench.log."""
    seconds, log = {}, []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DETPIPE_CKPT_DIR": str(work / ".ckpt")}
    for stage in STAGES:
        cmd = [sys.executable, str(ROOT / stage.script)] + [a for flag, value in stage.args
                                                             for a in ((flag, value) if value else (flag,))]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        seconds[stage.name] = round(time.perf_counter() - start, 1)
        log.append(f"== {stage.name} ({seconds[stage.name]} s)\n{proc.stdout}{proc.stderr}")
        (work / "bench.log").write_text("\n".join(log), encoding="utf-8")
        print(f"  {stage.name}: {seconds[stage.name]} s", flush=True)
        if proc.returncode:
            raise SystemExit(f"{stage.name} failed (exit {proc.returncode}); log: {work / 'bench.log'}\n"
                             + (proc.stderr or proc.stdout)[-2000:])
    return seconds


def _tsv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def collect(work: Path, seconds: dict[str, float]) -> dict:
    """The figures of a finished run folder."""
    metrics = json.loads((work / "reports" / "map" / "metrics.json").read_text(encoding="utf-8"))
    coco = metrics["coco"]
    epochs = [{"epoch": int(r["epoch"]), "phase": r["phase"], "val_map50": float(r["val_map50"])}
              for name in ("frozen", "unfrozen") for r in _tsv(work / "reports" / "train" / f"{name}.tsv")]
    train = [s for name, s in seconds.items() if name.startswith("train")]
    return {"test_map50": metrics["map50"], "test_map50_95": metrics["map50_95"],
            "ap_by_size": {size: coco[f"AP{size[0]}"] for size in ("small", "medium", "large")},
            "best_val_map50": max((e["val_map50"] for e in epochs), default=0.0), "epochs": epochs,
            "stage_seconds": seconds, "train_seconds": round(sum(train), 1),
            "pipeline_seconds": round(sum(seconds.values()), 1)}


def command(dataset: str, config: str, epochs: int | None) -> str:
    return f"python bench/realdata.py run {dataset} {config}" + (f" --epochs {epochs}" if epochs is not None else "")


def run(dataset: str, config: str, epochs: int | None, work_root: Path, record: bool) -> dict | None:
    try:
        work, dotted, counts = prepare(dataset, config, epochs, work_root)
    except Skip as exc:
        print(f"skip {dataset}/{config}: {exc}")
        return None
    print(f"{dataset}/{config} in {work}", flush=True)
    seconds = run_stages(work)
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    result = {"dataset": dataset, "config": config, "what": CONFIGS[config][0],
              "settings": {k: v for k, v in dotted.items() if not k.startswith("data.")},
              "command": command(dataset, config, epochs), "commit": git.stdout.strip(), "boxes": counts.get("boxes"),
              "machine": f"{platform.machine()}, {usable_cpus()} usable CPUs", **collect(work, seconds)}
    if record:
        results = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.is_file() else {}
        results[f"{dataset}/{config}"] = result
        RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(tables({f"{dataset}/{config}": result}))
    return result


def _score(v: float | None) -> str:
    return "-" if v is None or v < 0 else f"{v:.3f}"   # COCO writes -1 where a size has no objects


def tables(results: dict) -> str:
    """One markdown table per dataset, rows in CONFIGS order, each with its command."""
    out = []
    for dataset in DATASETS:
        rows = [results[f"{dataset}/{c}"] for c in CONFIGS if f"{dataset}/{c}" in results]
        if not rows:
            continue
        out += [f"{dataset}:", "", "| config | test mAP50 | test mAP50-95 | AP small / medium / large | "
                "best val mAP50 | epochs | train min | pipeline min | command |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            sizes = " / ".join(_score(r["ap_by_size"].get(k)) for k in ("small", "medium", "large"))
            out.append(f"| {r['config']} | {_score(r['test_map50'])} | {_score(r['test_map50_95'])} | {sizes} | "
                       f"{_score(r['best_val_map50'])} | {len(r['epochs'])} | {r['train_seconds'] / 60:.1f} | "
                       f"{r['pipeline_seconds'] / 60:.1f} | `{r['command']}` |")
        out.append("")
    return "\n".join(out)


def curves(results: dict, dataset: str, configs: list[str], every: int = 5) -> str:
    """Val mAP50 by epoch of `dataset`'s recorded runs `configs`, one column each: epochs 1-5, then
    every `every`-th, then the last of each run."""
    runs = {c: {e["epoch"]: e["val_map50"] for e in results[f"{dataset}/{c}"]["epochs"]} for c in configs
            if f"{dataset}/{c}" in results}
    missing = [c for c in configs if c not in runs]
    last = {max(r, default=0) for r in runs.values()}
    epochs = sorted({e for r in runs.values() for e in r if e <= 5 or e % every == 0 or e in last})
    out = [f"{dataset}: val mAP50 by epoch", "", "| epoch | " + " | ".join(runs) + " |", "|---" * (len(runs) + 1) + "|"]
    out += [f"| {e} | " + " | ".join(f"{r[e]:.3f}" if e in r else "" for r in runs.values()) + " |" for e in epochs]
    return "\n".join(out + ([f"(not recorded: {', '.join(missing)})"] if missing else []))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="one timed pipeline run")
    r.add_argument("dataset", choices=list(DATASETS))
    r.add_argument("config", choices=list(CONFIGS))
    r.add_argument("--epochs", type=int, help="unfrozen epochs instead of the configuration's (a time budget)")
    r.add_argument("--work", type=Path, default=WORK, help=f"run folders go here (default {WORK.relative_to(ROOT)})")
    r.add_argument("--no-record", action="store_true", help=f"do not add the result to {RESULTS.relative_to(ROOT)}")
    sub.add_parser("table", help=f"the tables of {RESULTS.relative_to(ROOT)}")
    sub.add_parser("list", help="datasets and configurations")
    c = sub.add_parser("curve", help="val mAP50 per epoch of recorded runs, side by side")
    c.add_argument("dataset", choices=list(DATASETS))
    c.add_argument("configs", nargs="+", choices=list(CONFIGS))
    c.add_argument("--every", type=int, default=5, help="after epoch 5, every N-th epoch (default 5)")
    args = p.parse_args(argv)
    if args.cmd == "run":
        if args.epochs is not None and args.epochs < 1:
            p.error(f"--epochs is {args.epochs}; give at least 1")
        run(args.dataset, args.config, args.epochs, args.work.resolve(), not args.no_record)
    elif args.cmd == "curve":
        print(curves(json.loads(RESULTS.read_text(encoding="utf-8")), args.dataset, args.configs, args.every))
    elif args.cmd == "table":
        print(tables(json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.is_file() else {}))
    else:
        for name, (world, n, seed) in DATASETS.items():
            print(f"dataset {name}: world {world}, {n} images, seed {seed}, "
                  f"classes {', '.join(WORLDS[world].classes)}")
        for name, (what, values) in CONFIGS.items():
            shown = {k: "<the solids pretrain run's models/best.pt>" if v is None else v for k, v in values.items()}
            print(f"config {name}: {what}\n    {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
