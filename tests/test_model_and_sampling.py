import logging
import re
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

from charlm import batching
from charlm import generate as generate_module
from charlm.config import ModelConfig
from charlm.controls import MODES, Controls, SamplingOptions, stream_seed
from charlm.data.vocabulary import Vocabulary
from charlm.draws import choose, keep_top_k, keep_top_p, uniform_noise
from charlm.generate import Sampler
from charlm.model.build import build_model, parameter_count

VOCAB = Vocabulary(list("abcdefgh\n"))


@pytest.mark.slow
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


@pytest.mark.parametrize("prime", ["abc", ""])
def test_a_prime_is_read_once_after_one_newline(prime, monkeypatch):
    """Every front end's prime (the library's TextGenerator under `charlm sample` and the
    API) is read as the start token and the prime: the one state a server and an export
    read it to, and scoring reads a text from."""
    from charlm.config import SampleConfig
    from charlm.textgen import TextGenerator

    s, model = sampler()
    read = []
    reading = generate_module.PromptReading

    def recording(sampler_, prompts, *args, **kwargs):
        read.extend(np.asarray(p).tolist() for p in prompts)
        return reading(sampler_, prompts, *args, **kwargs)

    monkeypatch.setattr(generate_module, "PromptReading", recording)
    generator = TextGenerator(model, VOCAB, SampleConfig(), sampler=s)
    generator.generate(prime, generator.settings(length=2, seed=0))
    assert read == [VOCAB.encode("\n" + prime).tolist()]


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["simple_rnn", "lstm", "gru"])
def test_stepwise_state_matches_the_full_model(cell):
    """Carrying the state step by step (across several chunks) gives what the model
    computes over the whole sequence: each greedy character is the full model's argmax."""
    s, model = sampler(cell)
    assert_greedy_text_is_the_full_models(s, model)


def assert_greedy_text_is_the_full_models(sampler_, model):
    prime = VOCAB.encode("\nabc").tolist()  # a prime is read after a newline
    greedy = generate(sampler_, "abc", length=300, argmax=True, seed=0)[0].tolist()
    logits = model(np.array([prime + greedy[:-1]], dtype="int32"))[0].numpy()
    logits[:, VOCAB.unknown_id] = -np.inf
    assert np.argmax(logits[len(prime) - 1 :], axis=-1).tolist() == greedy


@pytest.mark.slow
def test_stock_layers_step_by_their_math_and_others_by_their_keras_cell():
    """The embedding and the stock layer after it become one table lookup; a layer the
    gate math does not cover (a relu LSTM) steps by its Keras cell; a stock layer after
    it multiplies its input. All give the full model's greedy text."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(VOCAB.size, 4)(inputs)
    x = keras.layers.GRU(8, return_sequences=True)(x)
    x = keras.layers.LSTM(8, activation="relu", return_sequences=True)(x)
    x = keras.layers.SimpleRNN(8, return_sequences=True)(x)
    model = keras.Model(inputs, keras.layers.Dense(VOCAB.size)(x))
    s = Sampler(model, VOCAB)
    stages = s.model_step.stages
    kinds = [type(stage).__name__ for stage in stages]
    assert kinds == ["RecurrentStep", "CellStep", "RecurrentStep", "Dense"]
    assert stages[0].table is not None and stages[2].table is None
    assert_greedy_text_is_the_full_models(s, model)


def test_a_one_row_product_stays_out_of_xla_fusions():
    """XLA would fuse a one-row product with the additions after it into a loop about
    three times slower than its matrix-vector kernel (step.alone): in the compiled
    generation loop no recurrent layer's product (4 x 8 gates wide) is in a fusion."""
    s, _ = sampler("lstm")
    logits, states = s.feed([0], 1)
    controls = tuple(
        tf.constant(a) for a in Controls.of(SamplingOptions(), 1, s.vocab.size).arrays()
    )
    hlo = (
        s.generate_chunk["plain"]
        .for_rows(1)
        .experimental_get_compiler_ir(logits, states, tf.constant(1), controls, mode="plain")(
            stage="optimized_hlo"
        )
    )
    computations = re.split(r"\n(?=%|ENTRY)", hlo)
    fused_dots = [
        line
        for computation in computations
        if computation.startswith("%fused")
        for line in computation.splitlines()
        if " dot(" in line
    ]
    gate_products = [line for line in fused_dots if re.search(r"= f32\[(1,)?32\]", line)]
    assert " dot(" in hlo and not gate_products


@pytest.mark.slow
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


@pytest.mark.slow
def test_top_k_and_top_p_filters():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], dtype="float32"))
    two, point_seven, one = np.array([2]), np.float32([0.7]), np.float32([1.0])
    assert np.isfinite(keep_top_k(logits, two).numpy()).tolist() == [[True, True, False, False]]
    assert np.isfinite(keep_top_p(logits, point_seven).numpy()).tolist() == [
        [True, True, False, False]
    ]
    assert np.isfinite(keep_top_p(logits, one).numpy()).all()

    def pick(seed, top_k, mode, temperature=1.0):
        noise = uniform_noise(tf.constant([seed], tf.int64), tf.constant([0], tf.int64), 4)
        return choose(logits, noise, np.float32([temperature]), np.int32([top_k]), one, mode)

    assert pick(1, 0, "argmax").numpy().tolist() == [0]
    assert {int(pick(seed, 2, "filtered")[0]) for seed in range(40)} == {0, 1}
    assert {int(pick(seed, 0, "plain")[0]) for seed in range(200)} == {0, 1, 2, 3}
    assert {int(pick(seed, 0, "filtered", temperature=0.0)[0]) for seed in range(20)} == {0}


def test_draws_follow_the_softmax():
    """The Gumbel-max draw over the hashed noise samples the softmax: frequencies over
    many seeds match the probabilities."""
    probabilities = np.array([0.5, 0.3, 0.15, 0.05])
    logits = np.log(np.tile(probabilities, (4000, 1))).astype("float32")
    noise = uniform_noise(tf.range(4000, dtype=tf.int64), tf.zeros(4000, tf.int64), 4)
    draws = choose(
        logits,
        noise,
        np.ones(4000, "float32"),
        np.zeros(4000, "int32"),
        np.ones(4000, "float32"),
        "plain",
    ).numpy()
    frequencies = np.bincount(draws, minlength=4) / 4000
    assert np.allclose(frequencies, probabilities, atol=0.03)


@pytest.mark.slow
def test_a_stream_draws_the_same_alone_or_beside_others():
    """Lane k of a batch gives the text it gives alone, with the same seed and controls."""
    s, _ = sampler()
    batch = generate(s, "ab", streams=3, length=200, temperature=1.0, top_k=3, seed=9)
    for k in range(3):
        lanes_seed = stream_seed(9, k)
        alone = np.concatenate(
            list(
                s.sample(
                    VOCAB.encode("ab").tolist(),
                    1,
                    SamplingOptions(length=200, temperature=1.0, top_k=3, seed=lanes_seed),
                )
            ),
            axis=1,
        )
        assert np.array_equal(alone[0], batch[k])


def test_a_long_prime_is_read_in_pieces_like_a_short_one(monkeypatch):
    """Reading in pieces (READ_CHARS at a time) leaves the numbers one piece leaves."""
    from charlm import generate as generate_module

    s, _ = sampler("lstm")
    prime = VOCAB.encode("abcdefgh\n" * 30).tolist()
    whole_logits, whole_states = s.feed(prime)
    monkeypatch.setattr(generate_module, "READ_CHARS", 7)
    piece_logits, piece_states = s.feed(prime)
    assert np.array_equal(whole_logits, piece_logits)
    for whole, piece in zip(whole_states, piece_states):
        assert all(np.array_equal(a, b) for a, b in zip(whole, piece))


def first_stream_after(sampler_, streams, prime="abcab"):
    """Stream 0's logits and states after reading `prime` and generating 40 characters
    beside `streams - 1` others (all seeded alike)."""
    logits, states = sampler_.feed(VOCAB.encode(prime).tolist(), streams)
    controls = Controls.of(SamplingOptions(temperature=1.0, seed=4), streams, VOCAB.size)
    controls.seeds[:] = 4
    _, logits, states = sampler_.generate(logits, states, controls, 40, "plain")
    return [logits.numpy()[0]] + [x.numpy()[0] for layer in states for x in layer]


def big_sampler():
    # Large enough for the matrix kernels to differ between one row and several.
    model = build_model(ModelConfig(cell="lstm", layers=2, units=512, embedding_dim=64), VOCAB.size)
    return Sampler(model, VOCAB)


@pytest.mark.slow
def test_a_stream_computes_bit_for_bit_the_same_beside_any_number_of_others():
    """Not only the same characters: the same logits and states to the last bit, from two
    streams on (more than BLOCK_ROWS streams are stepped in blocks, for that reason); a
    batch-invariant sampler (a server's) gives a lone stream those numbers too."""
    s = big_sampler()
    invariant = s.batch_invariant()
    expected = first_stream_after(s, 2)
    for numbers in (
        first_stream_after(s, 5),
        first_stream_after(s, 40),
        first_stream_after(invariant, 1),
    ):
        assert all(np.array_equal(a, b) for a, b in zip(expected, numbers))


@pytest.mark.slow
def test_more_than_block_rows_streams_run_as_blocks_at_once_each_stream_in_its_place():
    """40 streams run as 40 rows: a block of BLOCK_ROWS rows and one of 8, each a call of
    the compiled loop in a thread of its own, both running at once (the barrier lets
    neither go on alone), when their prompts are read and when they are generated.
    Streams 32-39 get the characters they get as a batch of their own."""
    s, _ = sampler("lstm")
    calls, barrier = [], threading.Barrier(2, timeout=20)

    def recording(compiled):
        def call(first, *rest):
            calls.append((first.shape[0], threading.get_ident()))
            barrier.wait()
            return compiled(first, *rest)

        return call

    read, generate = s.read_chunk, s.generate_chunk["plain"]
    s.read_chunk = recording(read)
    s.generate_chunk = {**s.generate_chunk, "plain": recording(generate)}
    prompts = [np.arange(3, dtype=np.int32) + row % 5 for row in range(40)]
    controls = Controls.of(SamplingOptions(temperature=1.0, seed=3), 40, VOCAB.size)
    ids, logits, states = s.generate(*s.read_prompts(prompts), controls, 6, "plain")
    assert ids.shape == (40, 6) and logits.shape[0] == 40 and states[1][0].shape[0] == 40
    assert sorted(rows for rows, _ in calls) == [8, 8, batching.BLOCK_ROWS, batching.BLOCK_ROWS]
    assert len({thread for _, thread in calls[:2]}) == len({thread for _, thread in calls[2:]}) == 2
    s.read_chunk, s.generate_chunk = read, {**s.generate_chunk, "plain": generate}
    last = Controls.of(SamplingOptions(temperature=1.0, seed=3), 8, VOCAB.size)
    last.seeds[:] = controls.seeds[32:]
    alone, _, _ = s.generate(*s.read_prompts(prompts[32:]), last, 6, "plain")
    assert np.array_equal(ids[32:], alone)


@pytest.mark.slow
def test_a_lone_stream_runs_as_one_row_with_the_same_text_but_for_rounding():
    """One stream of `charlm sample` runs as a single row (the faster vector kernel): its
    numbers differ from the batched ones only by rounding."""
    s = big_sampler()
    assert s.rows_for(1) == 1 and s.batch_invariant().rows_for(1) == 2
    alone, batched = first_stream_after(s, 1), first_stream_after(s, 2)
    assert not all(np.array_equal(a, b) for a, b in zip(alone, batched))
    assert all(np.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(alone, batched))


def test_a_prompt_reads_bit_for_bit_the_same_beside_longer_and_shorter_ones():
    """Prompts of different lengths are read together (padded on the left, masked): each
    row ends with the numbers it has when read alone, to the last bit, as a server that
    reads its requests' prompts together needs to match `charlm sample`."""
    s = big_sampler().batch_invariant()  # as a server reads them
    prompts = [VOCAB.encode(text) for text in ("abcab\nba", "ca", "bacabcabcabbbacab\n")]
    alone_logits, alone_states = s.read_prompts(prompts[:1])
    logits, states = s.read_prompts(prompts)
    assert np.array_equal(alone_logits.numpy()[0], logits.numpy()[0])
    for alone_layer, layer in zip(alone_states, states):
        for alone, together in zip(alone_layer, layer):
            assert np.array_equal(alone.numpy()[0], together.numpy()[0])
    # And each of the others matches its own reading alone.
    for row in (1, 2):
        row_logits, _ = s.read_prompts(prompts[row : row + 1])
        assert np.array_equal(row_logits.numpy()[0], logits.numpy()[row])


@pytest.mark.slow
def test_compiling_every_row_bucket_warns_of_nothing(caplog):
    """A server compiles its loops for every row bucket at start (Sampler.compile): one
    program per bucket is the design, and TensorFlow must not call it "excessive
    retracing" on the console of every `charlm serve`."""
    s, _ = sampler("lstm")
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        s.compile(16)  # rows 1, 2, 4, 8 and 16: five programs of each loop
    assert not [record.getMessage() for record in caplog.records]
    assert s.read_chunk.experimental_get_tracing_count() == 5
    assert all(s.generate_chunk[mode].experimental_get_tracing_count() == 5 for mode in MODES)


@pytest.mark.slow
def test_prompts_and_streams_of_any_size_share_a_few_shapes_and_one_graph():
    """A server meets every prompt length and stream count: they must not each leave
    TensorFlow something to keep (a graph, a dispatch entry, kernels for a new shape).
    Prompts are read READ_CHARS columns at a time and row counts rounded up as
    row_bucket says, so XLA compiles one program per row bucket met."""
    s = sampler("lstm")[0].batch_invariant()
    shapes = set()
    read_chunk = s.read_chunk

    def recording(tokens, *rest):
        shapes.add(tuple(tokens.shape))
        return read_chunk(tokens, *rest)

    s.read_chunk = recording
    rng = np.random.default_rng(0)
    for rows in range(1, 6):
        for length in range(1, 20, 3):
            prompts = [rng.integers(0, VOCAB.size - 1, length) for _ in range(rows)]
            logits, states = s.read_prompts(prompts)
            controls = Controls.of(SamplingOptions(), rows, VOCAB.size)
            s.generate(logits, states, controls, 2, "plain")
    assert shapes == {(rows, generate_module.READ_CHARS) for rows in (2, 4, 8)}
    assert read_chunk.experimental_get_tracing_count() == 3
    # Generation is compiled by XLA per shape: one program per row bucket met (2, 4, 8).
    assert s.generate_chunk["plain"].experimental_get_tracing_count() == 3
    # A batch of any size runs as blocks of those few row counts, little of it padding.
    for min_rows in (1, batching.INVARIANT_ROWS):
        for rows in range(1, 257):
            padded = batching.row_bucket(rows, min_rows)
            whole, last = divmod(padded, batching.BLOCK_ROWS)
            blocks = [batching.BLOCK_ROWS] * whole + ([last] if last else [])
            assert set(blocks) <= {min_rows, 2, 4, 8, 16, 32}, (rows, blocks)
            # Padding only fills the last block: fewer rows than the last block's own
            # (or than its least, INVARIANT_ROWS in a large batch, min_rows otherwise).
            large = rows > batching.BLOCK_ROWS
            least = batching.INVARIANT_ROWS if large else min_rows
            last_rows = rows % batching.BLOCK_ROWS or batching.BLOCK_ROWS
            assert 0 <= padded - rows < max(last_rows, least), (rows, padded)
            assert min(blocks) >= least
