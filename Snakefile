# The same pipeline as dvc.yaml, for Snakemake users: `snakemake --cores 1 map` stops at the mAP,
# `snakemake --cores 1` runs everything. Rules pass each params.yaml section through `params:` so
# that changing a value reruns exactly the rules that read it.
configfile: "params.yaml"


DATA_ROOT = config["data"]["root"]
# Per-rule resources for cluster executors (profiles/slurm; ignored by a local run unless
# `--resources` caps them). Training asks for one GPU per DDP process (train.nproc); a CPU-only
# cluster sets `gpu: 0` for the train rules in its profile (set-resources). runtime in minutes.
SMALL = dict(mem_mb=2000, runtime=30)
TRAIN = dict(gpu=int(config["train"].get("nproc", 1)), mem_mb=16000, runtime=360)


rule all:
    input:
        "reports/index.md",


rule annotate:
    input:
        root=DATA_ROOT,
        script="stages/annotate.py",
    output:
        lines="data/annotations.txt",
        report="reports/data/annotate.json",
    params:
        data=config["data"],
    log:
        "logs/annotate.log",
    resources:
        **SMALL,
    conda:
        "envs/detpipe.yaml"
    shell:
        "python {input.script} --params params.yaml --out {output.lines:q} --report {output.report:q} 2>&1 | tee {log:q}"


rule split:
    input:
        lines="data/annotations.txt",
        script="stages/split.py",
    output:
        train="data/splits/train.txt",
        val="data/splits/val.txt",
        test="data/splits/test.txt",
        report="reports/data/split.json",
        plot="reports/data/split.png",
    params:
        seed=config["seed"],
        split=config["split"],
        classes=config["data"]["classes"],
        root=config["data"]["root"],
    log:
        "logs/split.log",
    resources:
        **SMALL,
    conda:
        "envs/detpipe.yaml"
    shell:
        "python {input.script} --params params.yaml --annotations {input.lines:q} --out-dir data/splits"
        " --report {output.report:q} --plot {output.plot:q} 2>&1 | tee {log:q}"


TRAIN_PARAMS = dict(
    lr=config["lr"],
    seed=config["seed"],
    model=config["model"],
    train=config["train"],
    classes=config["data"]["classes"],
)


rule train_frozen:
    input:
        train="data/splits/train.txt",
        val="data/splits/val.txt",
        script="stages/train.py",
    output:
        weights="models/frozen.pt",
        tsv="reports/train/frozen.tsv",
    params:
        **TRAIN_PARAMS,
    log:
        "logs/train_frozen.log",
    threads: 4
    resources:
        **TRAIN,
    conda:
        "envs/detpipe.yaml"
    shell:
        "python {input.script} --phase frozen --params params.yaml --train {input.train:q} --val {input.val:q}"
        " --out {output.weights:q} --metrics {output.tsv:q} 2>&1 | tee {log:q}"


rule train_unfrozen:
    input:
        train="data/splits/train.txt",
        val="data/splits/val.txt",
        init="models/frozen.pt",
        script="stages/train.py",
    output:
        best="models/best.pt",
        last="models/last.pt",
        tsv="reports/train/unfrozen.tsv",
    params:
        **TRAIN_PARAMS,
    log:
        "logs/train_unfrozen.log",
    threads: 4
    resources:
        **TRAIN,
    conda:
        "envs/detpipe.yaml"
    shell:
        "python {input.script} --phase unfrozen --params params.yaml --train {input.train:q} --val {input.val:q}"
        " --init {input.init:q} --out {output.best:q} --last {output.last:q} --metrics {output.tsv:q} 2>&1 | tee {log:q}"


rule predict:
    input:
        weights="models/best.pt",
        test="data/splits/test.txt",
        script="stages/predict.py",
    output:
        csv="data/detections/test.csv",
        samples=directory("reports/predictions"),
        summary="reports/predict.json",
    params:
        predict=config["predict"],
        confidence=config["map"]["confidence"],
        classes=config["data"]["classes"],
    log:
        "logs/predict.log",
    resources:
        **SMALL,
    conda:
        "envs/detpipe.yaml"
    shell:
        "python {input.script} --params params.yaml --weights {input.weights:q} --split {input.test:q}"
        " --out {output.csv:q} --samples-dir {output.samples:q} --summary {output.summary:q} 2>&1 | tee {log:q}"


rule map:
    input:
        detections="data/detections/test.csv",
        test="data/splits/test.txt",
        script="stages/evaluate.py",
    output:
        metrics="reports/map/metrics.json",
        info="reports/map/info.json",
        pr=directory("reports/map/pr"),
        prf=multiext("reports/map/prf_confidence", ".csv", ".png"),
        confusion=multiext("reports/map/confusion_matrix", ".csv", ".png"),
    params:
        map=config["map"],
        confidence=config["predict"]["confidence"],
        classes=config["data"]["classes"],
    log:
        "logs/map.log",
    resources:
        **SMALL,
    conda:
        "envs/detpipe.yaml"
    shell:
        "python {input.script} --params params.yaml --split {input.test:q} --detections {input.detections:q}"
        " --out reports/map 2>&1 | tee {log:q}"


rule overfit:
    input:
        frozen="reports/train/frozen.tsv",
        unfrozen="reports/train/unfrozen.tsv",
        split="reports/data/split.json",
        script="stages/overfit.py",
    output:
        md="reports/overfitting.md",
        json="reports/overfitting.json",
        png="reports/overfitting.png",
    params:
        overfit=config["overfit"],
    log:
        "logs/overfit.log",
    resources:
        **SMALL,
    conda:
        "envs/detpipe.yaml"
    shell:
        "python {input.script} --params params.yaml --frozen {input.frozen:q} --unfrozen {input.unfrozen:q}"
        " --split-report {input.split:q} --out-md {output.md:q} --out-json {output.json:q}"
        " --out-png {output.png:q} 2>&1 | tee {log:q}"


rule report:
    input:
        "reports/data/annotate.json",
        "reports/data/split.json",
        "reports/map/metrics.json",
        "reports/overfitting.json",
        "reports/predict.json",
        script="stages/report.py",
    output:
        "reports/index.md",
    log:
        "logs/report.log",
    resources:
        **SMALL,
    conda:
        "envs/detpipe.yaml"
    shell:
        "python {input.script} --reports reports --out {output:q} 2>&1 | tee {log:q}"
