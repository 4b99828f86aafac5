"""Episodes to training tensors: the dataset (skips with reasons), batches, instruction embeddings.

May import `robot_runtime.episode`, `robot_runtime.calibration` and `improvement_loop.recap`."""
