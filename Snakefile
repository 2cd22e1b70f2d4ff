# The same pipeline as dvc.yaml, for Snakemake users: `snakemake --cores 1 map` stops at the mAP,
# `snakemake --cores 1` runs everything. Both files come from one stage table
# (detpipe/pipeline/table.py): each rule's command, outputs, inputs (the stage's data files and
# the library code it imports) and params (the values of the keys its script reads) are taken from
# there, so changing an image, a line of library code or a param reruns exactly what it changes.
# Rules whose rerun often changes nothing are checkpoints, so that, as with DVC, a rule whose
# outputs come out unchanged stops the reruns there (see detpipe/pipeline/snake.py).
import sys

sys.path.insert(0, workflow.basedir)  # the library beside this file, not an installed copy

from detpipe.pipeline import snake

configfile: "params.yaml"


# Per-rule resources for cluster executors (profiles/slurm; ignored by a local run unless
# `--resources` caps them). Training asks for one GPU per DDP process (train.nproc); a CPU-only
# cluster sets `gpu: 0` for the train rules in its profile (set-resources). runtime in minutes.
SMALL = dict(mem_mb=2000, runtime=30)
TRAIN = dict(gpu=int(config["train"].get("nproc", 1)), mem_mb=16000, runtime=360)


rule all:
    input:
        "reports/index.md",


checkpoint annotate:
    input:
        **snake.inputs("annotate", config),
    output:
        **snake.outputs("annotate"),
    params:
        **snake.params("annotate", config),
    log:
        "logs/annotate.log",
    resources:
        **SMALL,
    conda:
        "envs/detpipe.yaml"
    shell:
        snake.shell("annotate")


checkpoint split:
    input:
        unpack(snake.inputs_after("split", config, checkpoints)),
    output:
        **snake.outputs("split"),
    params:
        **snake.params("split", config),
    log:
        "logs/split.log",
    resources:
        **SMALL,
    conda:
        "envs/detpipe.yaml"
    shell:
        snake.shell("split")


checkpoint pretrained:
    input:
        **snake.inputs("pretrained", config),
        # the starting weights file, when model.pretrained names one: its content is what the rule records
        weights=snake.pretrained_file(config),
    output:
        **snake.outputs("pretrained"),
    params:
        **snake.params("pretrained", config),
    log:
        "logs/pretrained.log",
    resources:
        **SMALL,
    conda:
        "envs/detpipe.yaml"
    shell:
        snake.shell("pretrained")


rule train_frozen:
    input:
        unpack(snake.inputs_after("train_frozen", config, checkpoints)),
    output:
        **snake.outputs("train_frozen"),
    params:
        **snake.params("train_frozen", config),
    log:
        "logs/train_frozen.log",
    threads: 4
    resources:
        **TRAIN,
    conda:
        "envs/detpipe.yaml"
    shell:
        snake.shell("train_frozen")


rule train_unfrozen:
    input:
        unpack(snake.inputs_after("train_unfrozen", config, checkpoints)),
    output:
        **snake.outputs("train_unfrozen"),
    params:
        **snake.params("train_unfrozen", config),
    log:
        "logs/train_unfrozen.log",
    threads: 4
    resources:
        **TRAIN,
    conda:
        "envs/detpipe.yaml"
    shell:
        snake.shell("train_unfrozen")


rule predict:
    input:
        unpack(snake.inputs_after("predict", config, checkpoints)),
    output:
        **snake.outputs("predict"),
    params:
        **snake.params("predict", config),
    log:
        "logs/predict.log",
    resources:
        **SMALL,
    conda:
        "envs/detpipe.yaml"
    shell:
        snake.shell("predict")


rule map:
    input:
        unpack(snake.inputs_after("map", config, checkpoints)),
    output:
        **snake.outputs("map"),
    params:
        **snake.params("map", config),
    log:
        "logs/map.log",
    resources:
        **SMALL,
    conda:
        "envs/detpipe.yaml"
    shell:
        snake.shell("map")


rule overfit:
    input:
        unpack(snake.inputs_after("overfit", config, checkpoints)),
    output:
        **snake.outputs("overfit"),
    params:
        **snake.params("overfit", config),
    log:
        "logs/overfit.log",
    resources:
        **SMALL,
    conda:
        "envs/detpipe.yaml"
    shell:
        snake.shell("overfit")


rule report:
    input:
        unpack(snake.inputs_after("report", config, checkpoints)),
    output:
        **snake.outputs("report"),
    log:
        "logs/report.log",
    resources:
        **SMALL,
    conda:
        "envs/detpipe.yaml"
    shell:
        snake.shell("report")
