"""The pipeline's single source of truth: the stage table, the code each stage runs, and the params
each stage may read. dvc.yaml is generated from it and the Snakefile reads it."""
