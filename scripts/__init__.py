"""Developer scripts (not installed with detpipe); `scripts.synth` makes the demo dataset."""
