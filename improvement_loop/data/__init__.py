"""Episodes to training tensors: the dataset (skips with reasons), batches, instruction embeddings.

May import `robot_runtime.episode` and `improvement_loop.recap`."""
