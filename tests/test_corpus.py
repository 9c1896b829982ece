import gzip

import numpy as np
import pytest

from charlm.config import load_config
from charlm.data import sources
from charlm.data.split import prepare_corpus
from charlm.data.tokens import encode_corpus, scan_corpus
from charlm.data.vocabulary import Vocabulary
from charlm.errors import CorpusError


def test_vocabulary_round_trip_and_unknown():
    vocab = Vocabulary(list("ab\nλ"))
    ids = vocab.encode("λab\n")
    assert vocab.decode(ids) == "λab\n"
    assert vocab.encode("z").tolist() == [vocab.unknown_id]
    assert vocab.unknown_chars("abzy") == ["y", "z"]


@pytest.mark.parametrize(
    "text", ["", "a", "héllo wörld", "日本語のテキスト", "emoji 🎉 ok", "x" * 100_000]
)
def test_scan_counts_code_points(tmp_path, text):
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    stats = scan_corpus([path])
    assert stats.chars == len(text)
    assert stats.counts == {c: text.count(c) for c in set(text)}


def test_buffer_boundaries_inside_a_character(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "BUFFER_BYTES", 3)
    path = tmp_path / "t.txt"
    text = "aλbλλc日本"
    path.write_text(text, encoding="utf-8")
    buffers = [points for points, _ in sources.read_code_points(path)]
    assert len(buffers) > 1 and "".join(map(chr, np.concatenate(buffers))) == text


def test_byte_order_mark_is_dropped(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("\ufeffhello".encode("utf-8"))
    assert scan_corpus([path]).chars == 5


def test_invalid_utf8_names_the_offset(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"hello \xc3\xa9 w\xffrld")
    with pytest.raises(CorpusError, match=r"bad.txt: invalid UTF-8 at byte offset 10"):
        scan_corpus([path])


def test_invalid_utf8_replaced_when_asked(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"ab\xffc")
    assert scan_corpus([path], errors="replace").counts["\ufffd"] == 1


def test_resolve_file_directory_glob_list(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/a.txt", "d/sub/b.md", "c.txt"):
        (tmp_path / name).write_text("text")
    (tmp_path / "d" / "image.bin").write_bytes(b"\0\1\2")
    (tmp_path / "d" / ".hidden").write_text("secret")
    assert [p.name for p in sources.resolve_files(str(tmp_path / "d"))] == ["a.txt", "b.md"]
    assert [p.name for p in sources.resolve_files(str(tmp_path / "d/**/*.md"))] == ["b.md"]
    files = sources.resolve_files([str(tmp_path / "c.txt"), str(tmp_path / "d")])
    assert [p.name for p in files] == ["c.txt", "a.txt", "b.md"]


def test_builtin_corpus_needs_no_network():
    files = sources.resolve_files("builtin:pydoc")
    assert scan_corpus(files).chars > 100_000


@pytest.mark.parametrize(
    "spec, message",
    [
        ("missing.txt", "does not exist"),
        ("builtin:nope", "unknown built-in corpus"),
        ("*.nothing", "matches no text files"),
    ],
)
def test_bad_corpus_specs(tmp_path, monkeypatch, spec, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CorpusError, match=message):
        sources.resolve_files(spec)


def test_binary_file_refused(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"ELF\0\0\0binary")
    with pytest.raises(CorpusError, match="binary"):
        sources.resolve_files(str(path))


def test_directory_without_text(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="holds no text files"):
        sources.resolve_files(str(tmp_path / "empty"))


def test_gzip_corpus(tmp_path):
    path = tmp_path / "t.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as stream:
        stream.write("gzipped text λ")
    assert scan_corpus(sources.resolve_files(str(path))).chars == 14


def test_scan_cache_notices_changed_file(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("aaaa")
    assert scan_corpus([path]).chars == 4
    path.write_text("aaaaaaa")
    assert scan_corpus([path]).chars == 7


def test_token_file_reads_windows(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcdefghij")
    vocab = scan_corpus([path]).vocabulary()
    tokens = encode_corpus([path], vocab)
    assert tokens.length == 10 and tokens.dtype == "uint8"
    rows = tokens.read_windows([0, 5], 3)
    assert [vocab.decode(r) for r in rows] == ["abc", "fgh"]


def test_large_vocabulary_uses_wider_tokens(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("".join(chr(0x4E00 + i) for i in range(300)))
    vocab = scan_corpus([path]).vocabulary()
    tokens = encode_corpus([path], vocab)
    assert tokens.dtype == "uint16"
    assert vocab.decode(tokens.read(0, 300)) == path.read_text()


def prepare(tmp_path, text, *settings):
    path = tmp_path / "c.txt"
    path.write_text(text)
    config = load_config(None, [f"data.corpus={path}", *settings])
    return prepare_corpus(config.data, config.train.seq_length)


def test_split_is_contiguous_tail(tmp_path):
    prepared = prepare(
        tmp_path, "x" * 900 + "y" * 100, "data.val_fraction=0.1", "train.seq_length=50"
    )
    assert (prepared.train.start, prepared.train.stop) == (0, 900)
    assert (prepared.val.start, prepared.val.stop) == (900, 1000)
    assert set(prepared.vocab.decode(prepared.val.tokens.read(900, 100))) == {"y"}


def test_validation_slice_is_bounded(tmp_path):
    prepared = prepare(
        tmp_path,
        "x" * 10_000,
        "data.val_fraction=0.5",
        "data.val_max_chars=300",
        "train.seq_length=10",
    )
    assert len(prepared.val) == 300


def test_separate_validation_files_map_unseen_to_unknown(tmp_path):
    (tmp_path / "v.txt").write_text("abz" * 50)
    prepared = prepare(
        tmp_path, "ab" * 500, f"data.val_corpus={tmp_path / 'v.txt'}", "train.seq_length=10"
    )
    ids = prepared.val.tokens.read(0, 3)
    assert ids.tolist() == [0, 1, prepared.vocab.unknown_id]


@pytest.mark.parametrize(
    "text, settings, message",
    [
        ("", [], "is empty"),
        ("short text", ["train.seq_length=100"], "fewer than one sequence"),
        ("x" * 150, ["train.seq_length=100", "data.val_fraction=0.1"], "validation text has 15"),
    ],
)
def test_too_little_text(tmp_path, text, settings, message):
    with pytest.raises(CorpusError, match=message):
        prepare(tmp_path, text, *settings)


def test_vocabulary_json_is_checked(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text('{"chars": ["a", "bb"]}')
    with pytest.raises(CorpusError, match="not a charlm vocabulary"):
        Vocabulary.load(path)
    Vocabulary(list("ab")).save(path)
    assert Vocabulary.load(path).chars == ["a", "b"]
    assert np.array_equal(Vocabulary.load(path).encode("ba"), [1, 0])
