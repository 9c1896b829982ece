import numpy as np

from charlm.data.pipeline import evaluation_dataset, training_batch, training_dataset
from charlm.data.split import Split
from charlm.data.tokens import encode_corpus, scan_corpus


def token_split(tmp_path, text):
    path = tmp_path / "t.txt"
    path.write_text(text)
    vocab = scan_corpus([path]).vocabulary()
    tokens = encode_corpus([path], vocab)
    return Split(tokens, 0, tokens.length), vocab


def test_batch_is_a_pure_function_of_seed_and_step(tmp_path):
    split, _ = token_split(tmp_path, "abcdefghijklmnopqrstuvwxyz" * 40)
    first = training_batch(split, 8, 10, seed=3, step=5)
    again = training_batch(split, 8, 10, seed=3, step=5)
    other = training_batch(split, 8, 10, seed=3, step=6)
    assert np.array_equal(first[0], again[0]) and not np.array_equal(first[0], other[0])


def test_targets_are_inputs_shifted_by_one(tmp_path):
    split, vocab = token_split(tmp_path, "abcdefghijklmnopqrstuvwxyz" * 40)
    inputs, targets = training_batch(split, 4, 10, seed=0, step=0)
    assert np.array_equal(inputs[:, 1:], targets[:, :-1])
    for row in inputs:  # each window is a real stretch of the text
        assert vocab.decode(row) in "abcdefghijklmnopqrstuvwxyz" * 40


def test_windows_stay_inside_the_split(tmp_path):
    split, vocab = token_split(tmp_path, "a" * 500 + "b" * 500)
    train = Split(split.tokens, 0, 500)
    for step in range(50):
        inputs, targets = training_batch(train, 8, 20, seed=1, step=step)
        assert set(vocab.decode(inputs.ravel())) == {"a"}
        assert set(vocab.decode(targets.ravel())) == {"a"}


def test_training_dataset_starts_at_the_given_step(tmp_path):
    split, _ = token_split(tmp_path, "abcdefghijklmnopqrstuvwxyz" * 40)
    from_zero = list(training_dataset(split, 4, 8, 0, 0, 5))
    from_three = list(training_dataset(split, 4, 8, 0, 3, 5))
    assert len(from_three) == 2
    assert np.array_equal(from_zero[3][0].numpy(), from_three[0][0].numpy())


def test_evaluation_windows_cover_the_split_once(tmp_path):
    split, vocab = token_split(tmp_path, "".join(chr(97 + i % 26) for i in range(105)))
    batches = list(evaluation_dataset(split, 3, 10))
    inputs = np.concatenate([b[0].numpy() for b in batches])
    assert inputs.shape == (10, 10)  # (105 - 1) // 10 windows
    assert vocab.decode(inputs.ravel()) == vocab.decode(split.tokens.read(0, 100))


def test_pipelines_run_without_tf_data_autotuning(tmp_path):
    """Deleting an iterator waits for tf.data's autotuning thread, seconds at every
    evaluation (docs/results.md): neither pipeline starts one."""
    split, _ = token_split(tmp_path, "abcdefghijklmnopqrstuvwxyz" * 40)
    for dataset in (training_dataset(split, 4, 8, 0, 0, 5), evaluation_dataset(split, 4, 8)):
        assert dataset.options().autotune.enabled is False
