"""Triton side: model specs, ONNX export, model-repository generation and the server launcher."""
