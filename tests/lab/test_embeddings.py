"""Our MiniLM encoder checked against sentence-transformers, plus the geometry helpers."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before sentence-transformers / huggingface_hub load

import numpy as np
import pytest

from learn.lab.embeddings import Encoder, analogy_vector, cosine_matrix, pca_2d, pick_device
from learn.lab.models import library_versions, minilm_path, wordpiece_words

LONG = " ".join(
    f"Sentence {i} of a long report on rivers, bridges and the trains that cross them."
    for i in range(40)
)  # ~700 WordPiece tokens: exercises truncation to 256

SENTENCES = [
    "A cat is sleeping on the windowsill.",
    "A kitten is napping by the window.",
    "The tax code allows deductions for charitable contributions.",
    "Hi",
    "",
    "   leading and trailing spaces   ",
    "What time does the train to Edinburgh leave?",
    LONG,
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le chat dort sur le canapé depuis ce matin.",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "I love pizza 🍕🍕 and tacos 🌮!",
    "🙂",
    "GPU kernels fuse matmul + softmax to save memory bandwidth.",
    "x = torch.randn(3, 4) @ W.T  # (3, 5)",
    "The quick brown fox jumps over the lazy dog. " * 12,
    "Stock markets fell sharply on Tuesday after the announcement.",
    "¿Dónde está la biblioteca?",
    "a b c d e f g",
]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(device="cpu")


@pytest.fixture(scope="module")
def reference(encoder: Encoder) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(minilm_path()), device="cpu")
    return st.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)


@pytest.fixture(scope="module")
def ours(encoder: Encoder) -> np.ndarray:
    return encoder.encode(SENTENCES, batch_size=8)


def test_the_model_is_found_locally_and_the_vocab_holds_analogy_words():
    assert (minilm_path() / "model.safetensors").is_file()
    words = wordpiece_words(5000)
    assert len(words) == 5000
    assert {"king", "queen", "man", "woman", "paris", "france"} <= set(words)
    assert all(w.isascii() and w.isalpha() and w.islower() and len(w) >= 2 for w in words)
    assert words[:3] == ["the", "of", "and"]
    assert set(library_versions()) == {"torch", "transformers", "tokenizers", "numpy"}


def test_an_env_var_overrides_the_model_path(monkeypatch, tmp_path):
    monkeypatch.setenv("FP_EMBED_MODEL", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        minilm_path()
    (tmp_path / "config.json").write_text("{}")
    assert minilm_path() == tmp_path


def test_it_matches_sentence_transformers_row_by_row(encoder, ours, reference):
    assert encoder.dim == 384
    assert encoder.device == "cpu" == pick_device("cpu")
    assert ours.shape == (len(SENTENCES), 384) and ours.dtype == np.float32
    cos = (ours * reference).sum(axis=1) / np.linalg.norm(reference, axis=1)
    assert cos.min() >= 0.9999, dict(zip(SENTENCES, cos.round(6), strict=True))
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_it_keeps_input_order_whatever_the_lengths(encoder, ours):
    events = []
    idx = [7, 3, 16, 0, 4, 12]  # long, short, long, medium, empty, emoji
    subset = encoder.encode(
        [SENTENCES[i] for i in idx], batch_size=2, emit=lambda kind, **d: events.append((kind, d))
    )
    np.testing.assert_allclose(subset, ours[idx], atol=2e-4)
    assert [d["message"] for _, d in events] == ["batch 1/3", "batch 2/3", "batch 3/3"]
    assert events[-1][1]["pct"] == 100.0
    assert encoder.encode([]).shape == (0, 384)


def test_truncation_ignores_everything_after_256_tokens(encoder):
    a, b = encoder.encode([LONG, LONG + " And then a completely different ending about cheese."])
    assert float(a @ b) > 0.99999


def test_meaning_is_closer_than_topic_words(ours):
    cat, kitten, tax = ours[0], ours[1], ours[2]
    assert cat @ kitten > cat @ tax + 0.3


def test_pca_matches_an_eigendecomposition_of_the_covariance(ours):
    proj = pca_2d(ours)
    centred = ours.astype(np.float64) - ours.mean(axis=0)
    evals, evecs = np.linalg.eigh(np.cov(centred, rowvar=False))  # ascending
    ratio = evals[::-1][:2] / evals.sum()
    np.testing.assert_allclose(proj.explained, ratio, rtol=1e-6)
    assert 0 < proj.explained.sum() <= 1 and proj.explained[0] >= proj.explained[1]
    top = centred @ evecs[:, ::-1][:, :2]  # (n, 2), up to sign
    np.testing.assert_allclose(np.abs(proj.points), np.abs(top), atol=1e-6)


def test_pca_of_one_or_two_points_has_no_nans():
    one = pca_2d(np.ones((1, 5)))
    assert one.points.shape == (1, 2) and not one.points.any() and not one.explained.any()
    two = pca_2d(np.array([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0]]))
    np.testing.assert_allclose(two.explained, [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(np.abs(two.points), [[2.5, 0.0], [2.5, 0.0]], atol=1e-12)
    same = pca_2d(np.ones((4, 3)))
    assert np.isfinite(same.points).all() and not same.explained.any()


def test_cosine_matrix_is_symmetric_with_a_unit_diagonal(ours):
    sim = cosine_matrix(ours)
    assert sim.shape == (len(SENTENCES), len(SENTENCES))
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-5)
    np.testing.assert_allclose(sim, sim.T, atol=1e-6)
    np.testing.assert_allclose(sim, ours @ ours.T, atol=1e-5)


def test_analogy_vector_is_the_normalised_offset():
    a, b, c = np.eye(3, dtype=np.float32)
    v = analogy_vector(a, b, c)
    np.testing.assert_allclose(v, np.array([1, -1, 1]) / np.sqrt(3), rtol=1e-6)
    assert not analogy_vector(a, a, np.zeros(3)).any()
