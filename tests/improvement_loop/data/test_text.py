"""Instruction embeddings: real encoder, unit norm, cached on disk so a second run skips the model."""
import numpy as np

from robot_runtime.improvement_loop.data.text import EMBEDDING_DIM, TextEmbedder


def test_embeddings_are_unit_norm_distinct_and_cached(tmp_path):
    texts = ["push the puck to the goal", "open the drawer", "push the puck to the goal"]
    first = TextEmbedder(tmp_path)
    vectors = first.embed(texts)
    assert vectors.shape == (3, EMBEDDING_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    assert vectors[0] @ vectors[1] < 0.9
    assert len(list(tmp_path.glob("*.npy"))) == 2            # one file per distinct text
    second = TextEmbedder(tmp_path)
    np.testing.assert_array_equal(second.embed(texts[:2]), vectors[:2])
    assert second._model is None                             # served from disk, the encoder never loaded
    assert TextEmbedder(tmp_path).embed([]).shape == (0, EMBEDDING_DIM)
