"""Command-line entry points of `detpipe` (also `python -m detpipe`)."""
