import math

import pytest
import torch

pytest.importorskip("transformers")

from eval_helpers import FIXTURES  # noqa: E402
from ows.data.calibration import read_texts, token_stream  # noqa: E402
from ows.eval.perplexity import perplexity, windows  # noqa: E402


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("num_tokens, seq_len, stride", [(100, 16, None), (100, 16, 5), (17, 16, None), (5, 16, None), (2, 2, None)])
def test_windows_score_every_token_after_the_first_once(num_tokens, seq_len, stride):
    spans = windows(num_tokens, seq_len, stride)
    scored = [p for _, end, first in spans for p in range(first, end)]
    assert scored == list(range(1, num_tokens))
    assert all(end - begin <= seq_len and begin < first for begin, end, first in spans)
    if stride:
        assert all(end - first <= stride for _, end, first in spans)


def test_bad_window_settings():
    with pytest.raises(ValueError, match="stride=16"):
        windows(100, 16, 16)
    with pytest.raises(ValueError, match="seq_len=1"):
        windows(100, 1)


def test_one_window_equals_exp_of_the_model_loss(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    texts = read_texts(FIXTURES / "text_tiny.txt")
    ids = torch.tensor([token_stream(tokenizer, texts)])
    with torch.no_grad():
        loss = float(model(input_ids=ids, labels=ids).loss)
    out = perplexity(model, tokenizer, texts, seq_len=ids.shape[1] + 10)
    assert out["tokens"] == ids.shape[1] - 1
    assert out["nll"] == pytest.approx(loss, rel=1e-5)
    assert out["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)


def test_sliding_windows_equal_a_window_by_window_sum(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    texts = read_texts(FIXTURES / "text_tiny.txt")
    stream = token_stream(tokenizer, texts)
    total = 0.0
    for begin, end, first in windows(len(stream), 24, 8):
        ids = torch.tensor([stream[begin:end]])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        targets = ids[0, 1:]
        token_nll = -logprobs[torch.arange(len(targets)), targets]
        total += float(token_nll[first - begin - 1:].sum())
    expected = total / (len(stream) - 1)
    for batch_size in (1, 4):
        out = perplexity(model, tokenizer, texts, seq_len=24, stride=8, batch_size=batch_size)
        assert out["nll"] == pytest.approx(expected, rel=1e-5)
    # more context per scored token changes the number (the tiny model is random, so just "differs")
    assert perplexity(model, tokenizer, texts, seq_len=24)["nll"] != pytest.approx(expected, rel=1e-6)
