"""The networks (VLA policy, distributional critics), their checkpoints and the ONNX export into a bundle.

May import `robot_runtime.bundle`, `improvement_loop.recap` and `data.text` (the embedding size)."""
