"""A DistilBERT with random weights, of any shape: the tests' tiny base model and the benchmark's stand-in
for distilbert-base-uncased. Speed and plumbing need the architecture and the vocabulary, not trained weights."""

from __future__ import annotations

from pathlib import Path

# distilbert-base-uncased's shape (its config.json): the same FLOPs as the real model, random weights.
DISTILBERT_BASE_SHAPE = dict(
    vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072, max_position_embeddings=512
)
# 2 layers, width 32: trains in seconds on a CPU.
TINY_DISTILBERT_SHAPE = dict(
    vocab_size=30522, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=512
)


def random_distilbert(folder: str | Path, shape: dict = TINY_DISTILBERT_SHAPE, seed: int = 0) -> Path:
    """Save a DistilBERT of `shape` (DistilBertConfig fields) with weights drawn from `seed` into `folder`,
    beside the real uncased WordPiece vocabulary (the packaged MiniLM's, which is bert-base-uncased's),
    so the folder loads as a base model offline. Returns the folder."""
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    from training.base import load_tokenizer

    folder = Path(folder)
    torch.manual_seed(seed)
    DistilBertModel(DistilBertConfig(**shape)).save_pretrained(folder, safe_serialization=True)
    load_tokenizer("minilm").save_pretrained(folder)
    return folder
