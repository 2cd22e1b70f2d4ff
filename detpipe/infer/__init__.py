"""Inference with a trained detector: preprocessing, backends (PyTorch, ONNX), decoding, drawing, sources."""
