"""Command-line entry points of `python -m detpipe`."""
