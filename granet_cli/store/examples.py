"""Per-example correctness of a run's reported model, as a short text the results db can hold.

Why: accuracies on a finite test set move in steps of 1/n and carry the test set's own sampling noise
(at 97 % on 450 images the binomial standard error is ~0.8 points, more than most seed-to-seed
spreads). Keeping which test examples each run got right lets a report put intervals on both noises
(seeds and examples) and compare methods paired on the same examples.

Format: ``"<n>:<base64 of the bits, numpy packbits order>"`` -- a few hundred bytes for CIFAR's 10,000
examples; plain text, so it passes unchanged through Ray Tune's results, JSON and every db tool.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np


def pack(correct: Sequence[bool] | np.ndarray) -> str:
    """The bits of `correct` (one per test example, in test-set order) as ``"n:base64"``."""
    bits = np.asarray(correct, dtype=bool).reshape(-1)
    return f"{bits.size}:{base64.b64encode(np.packbits(bits).tobytes()).decode('ascii')}"


def unpack(text: str) -> np.ndarray:
    """The boolean array `pack` encoded; ValueError on anything else."""
    n_text, sep, data = text.partition(":")
    if not sep or not n_text.isdigit():
        raise ValueError("per-example correctness: expected '<n>:<base64>'")
    n = int(n_text)
    raw = np.frombuffer(base64.b64decode(data.encode("ascii"), validate=True), dtype=np.uint8)
    if raw.size != (n + 7) // 8:
        raise ValueError(f"per-example correctness: {raw.size} bytes cannot hold {n} examples")
    return np.unpackbits(raw, count=n).astype(bool)
