"""Inference engines behind one interface (`base`): ONNX Runtime, TensorRT, and `create_engine` choosing.

May import `robot_runtime.bundle` and `robot_runtime.files`; `factory` is the only module importing both engines."""
