"""The files stages hand each other: one typed contract per file, with `write` and a strict `read`."""
