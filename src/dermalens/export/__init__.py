"""Export: ONNX and precision variants, built offline into a bundle."""
