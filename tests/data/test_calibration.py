import json

import pytest
import torch

from ows.data.calibration import builtin_calibration_texts, calibration_batches, read_texts


class CharTokenizer:
    """One token per character (ids 1..), eos id 0: enough to check windowing exactly."""

    eos_token_id = 0

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[ord(c) for c in text] for text in texts]}


@pytest.fixture(scope="module")
def builtin():
    return builtin_calibration_texts()


def test_builtin_texts_are_many_english_articles(builtin):
    assert len(builtin) >= 100
    assert all(isinstance(t, str) and len(t) > 100 for t in builtin)
    words = " ".join(builtin[:50]).lower().split()
    common = sum(w in {"the", "of", "and", "to", "in", "a"} for w in words)
    assert common / len(words) > 0.1


def test_windows_exact_length_and_batched(builtin):
    batches = calibration_batches(CharTokenizer(), builtin, num_samples=10, seq_len=64, batch_size=4, seed=0)
    assert [b["input_ids"].shape for b in batches] == [(4, 64), (4, 64), (2, 64)]
    for b in batches:
        assert b["input_ids"].dtype == torch.long and b["attention_mask"].dtype == torch.long
        assert torch.equal(b["attention_mask"], torch.ones_like(b["input_ids"]))


def test_windows_deterministic_by_seed(builtin):
    tok = CharTokenizer()

    def ids(seed):
        return torch.cat([b["input_ids"] for b in calibration_batches(tok, builtin, 6, 32, seed=seed)])

    assert torch.equal(ids(0), ids(0))
    assert not torch.equal(ids(0), ids(1))


def test_windows_come_from_the_stream_with_eos_between_texts():
    texts = ["abc", "defgh"]
    stream = [ord(c) for c in "abc"] + [0] + [ord(c) for c in "defgh"]
    batches = calibration_batches(CharTokenizer(), texts, num_samples=20, seq_len=5, batch_size=32, seed=3)
    for row in batches[0]["input_ids"].tolist():
        assert any(stream[s : s + 5] == row for s in range(len(stream) - 4))


def test_too_short_text_names_the_numbers():
    with pytest.raises(ValueError, match=r"3 tokens.*seq_len=8.*num_samples=2"):
        calibration_batches(CharTokenizer(), ["abc"], num_samples=2, seq_len=8)


@pytest.mark.parametrize("kwargs, name", [(dict(num_samples=0), "num_samples"), (dict(seq_len=1), "seq_len"),
                                          (dict(batch_size=0), "batch_size")])
def test_invalid_numbers(kwargs, name):
    args = dict(num_samples=2, seq_len=4) | kwargs
    with pytest.raises(ValueError, match=name):
        calibration_batches(CharTokenizer(), ["abcdefgh"], **args)


def test_read_txt_paragraphs_and_lines(tmp_path):
    para = tmp_path / "para.txt"
    para.write_text("first line\nstill first\n\n  \nsecond\n", encoding="utf-8")
    assert read_texts(para) == ["first line\nstill first", "second"]
    lines = tmp_path / "lines.txt"
    lines.write_text("one\ntwo\n\n", encoding="utf-8")
    assert read_texts(lines) == ["one", "two"]


def test_read_jsonl_and_json(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "a b"}\n\n{"text": "c", "id": 2}\n', encoding="utf-8")
    assert read_texts(jsonl) == ["a b", "c"]
    arr = tmp_path / "d.json"
    arr.write_text(json.dumps([{"text": "x"}, {"text": "y"}]), encoding="utf-8")
    assert read_texts(arr) == ["x", "y"]
    lines_in_json = tmp_path / "e.json"
    lines_in_json.write_text('{"text": "p"}\n{"text": "q"}\n', encoding="utf-8")
    assert read_texts(lines_in_json) == ["p", "q"]


def test_read_errors_name_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"body": "no"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl line 2: no 'text' field"):
        read_texts(bad)
    arr = tmp_path / "bad.json"
    arr.write_text(json.dumps([{"text": "x"}, {"txt": "y"}]), encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json item 1: no 'text' field"):
        read_texts(arr)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.txt.*not UTF-8"):
        read_texts(latin)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_texts(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no text"):
        read_texts(empty)
    other = tmp_path / "data.csv"
    other.write_text("text\nx\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"\.txt"):
        read_texts(other)


def test_builtin_without_gensim_names_the_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gensim" else real(name, *a))
    with pytest.raises(FileNotFoundError, match=r"pip install gensim==4\.4\.0"):
        builtin_calibration_texts()
