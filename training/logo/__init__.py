"""The logo detector: data from registry packages, EfficientNet-Lite0 features, ONNX export."""

# Output order of the model's ``scores``; the transformer reads "logo" as the prediction.
LABELS = ("out_of_domain", "logo")
