import keras
import numpy as np
import pytest

from charlm.config import ModelConfig
from charlm.data.vocabulary import Vocabulary
from charlm.generate import Sampler, SamplingOptions, choose, keep_top_k, keep_top_p
from charlm.model.build import build_model, parameter_count

VOCAB = Vocabulary(list("abcdefgh\n"))


@pytest.mark.parametrize("cell", ["simple_rnn", "lstm", "gru"])
def test_each_cell_builds_and_round_trips_through_keras_files(tmp_path, cell):
    model = build_model(
        ModelConfig(cell=cell, layers=2, units=8, embedding_dim=4, dropout=0.1), VOCAB.size
    )
    tokens = np.array([[0, 1, 2], [3, 4, 5]], dtype="int32")
    logits = model(tokens)
    assert logits.shape == (2, 3, VOCAB.size) and logits.dtype == "float32"
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert np.allclose(loaded(tokens), logits, atol=1e-6)


def test_parameter_count_matches_the_formula():
    model = build_model(ModelConfig(cell="lstm", layers=1, units=4, embedding_dim=3), 10)
    assert parameter_count(model) == 10 * 3 + 4 * 4 * (3 + 4 + 1) + (4 + 1) * 10


def sampler(cell="gru"):
    model = build_model(
        ModelConfig(cell=cell, layers=2, units=8, embedding_dim=4), VOCAB.size, seed=1
    )
    return Sampler(model, VOCAB), model


def generate(sampler_, prime, streams=1, **options):
    chunks = list(
        sampler_.sample(VOCAB.encode(prime).tolist(), streams, SamplingOptions(**options))
    )
    return np.concatenate(chunks, axis=1)


def test_same_seed_same_text_other_seed_other_text():
    s, _ = sampler()
    a = generate(s, "abc", length=300, seed=5, temperature=1.0)
    b = generate(s, "abc", length=300, seed=5, temperature=1.0)
    c = generate(s, "abc", length=300, seed=6, temperature=1.0)
    assert a.shape == (1, 300) and np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("cell", ["simple_rnn", "lstm", "gru"])
def test_stepwise_state_matches_the_full_model(cell):
    """Carrying the state step by step (across several chunks) gives what the model
    computes over the whole sequence: each greedy character is the full model's argmax."""
    s, model = sampler(cell)
    prime = VOCAB.encode("abc").tolist()
    greedy = generate(s, "abc", length=300, argmax=True, seed=0)[0].tolist()
    logits = model(np.array([prime + greedy[:-1]], dtype="int32"))[0].numpy()
    logits[:, VOCAB.unknown_id] = -np.inf
    assert np.argmax(logits[len(prime) - 1 :], axis=-1).tolist() == greedy


def test_temperature_zero_top_k_one_and_tiny_top_p_mean_argmax():
    s, _ = sampler()
    greedy = generate(s, "ab", length=50, argmax=True, seed=0)
    assert np.array_equal(generate(s, "ab", length=50, temperature=0.0, seed=3), greedy)
    assert np.array_equal(generate(s, "ab", length=50, top_k=1, seed=3), greedy)
    assert np.array_equal(generate(s, "ab", length=50, top_p=1e-6, seed=3), greedy)


def test_streams_are_independent_and_the_unknown_token_never_appears():
    s, _ = sampler()
    out = generate(s, "", streams=4, length=400, temperature=2.0, seed=1)
    assert out.shape == (4, 400)
    assert not (out == VOCAB.unknown_id).any()
    assert len({row.tobytes() for row in out}) == 4


def test_top_k_and_top_p_filters():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], dtype="float32"))
    assert np.isfinite(keep_top_k(logits, 2).numpy()).tolist() == [[True, True, False, False]]
    assert np.isfinite(keep_top_p(logits, 0.7).numpy()).tolist() == [[True, True, False, False]]
    assert np.isfinite(keep_top_p(logits, 1.0).numpy()).all()
    assert choose(logits, np.array([1, 2]), 1.0, 0, 1.0, "argmax").numpy().tolist() == [0]
    picks = [
        choose(logits, np.array([1, seed]), 1.0, 2, 1.0, "filtered").numpy()[0]
        for seed in range(40)
    ]
    assert set(picks) == {0, 1}
