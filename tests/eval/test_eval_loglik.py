import pytest

pytest.importorskip("transformers")

from eval_helpers import random_bigram  # noqa: E402
from ows.eval.loglik import encode_pair, loglikelihoods, max_length  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


PAIRS = [("Question: What is 12 + 7?\nAnswer:", " 19"), ("Question: What is 12 + 7?\nAnswer:", " 20"),
         ("The quick brown fox jumps over the", " lazy dog"), ("The capital of France is ", "Paris"),
         ("Input: 3 and 4. Output:", " 7. The capital of France is Paris.")]


def test_encode_pair_moves_trailing_space_and_splits_the_whole_encoding(tokenizer):
    context_ids, continuation_ids = encode_pair(tokenizer, "The capital of France is ", "Paris")
    assert context_ids == tokenizer.encode("The capital of France is")
    assert context_ids + continuation_ids == tokenizer.encode("The capital of France is Paris")
    assert tokenizer.decode(continuation_ids) == " Paris"
    with pytest.raises(ValueError):
        encode_pair(tokenizer, "", "x")


def test_loglikelihoods_equal_token_by_token_sums(tokenizer):
    model = random_bigram(len(tokenizer))
    expected = [model.loglik(*encode_pair(tokenizer, c, x)) for c, x in PAIRS]
    for batch_size in (1, 2, 8):
        assert loglikelihoods(model, tokenizer, PAIRS, batch_size) == pytest.approx(expected, abs=1e-4)


def _forward_loglik(model, tokens, num_continuation):
    import torch

    ids = torch.tensor([tokens])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
    targets = ids[0, 1:]
    return float(logprobs[torch.arange(len(targets)), targets][-num_continuation:].sum())


def test_long_contexts_are_truncated_on_the_left(tokenizer, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    model.config.max_position_embeddings = 8
    pair = ("Input: 3 and 4. Output: 7. The capital of France is Paris. Question: What is 12 + 7?\nAnswer:", " 19")
    context_ids, continuation_ids = encode_pair(tokenizer, *pair)
    assert len(context_ids) > 8 > len(continuation_ids)
    kept = (context_ids + continuation_ids)[-9:]  # max length + 1 tokens; the last is only a target
    truncated = _forward_loglik(model, kept, len(continuation_ids))
    assert truncated != pytest.approx(_forward_loglik(model, context_ids + continuation_ids, len(continuation_ids)))
    assert loglikelihoods(model, tokenizer, [pair])[0] == pytest.approx(truncated, abs=1e-4)
    assert max_length(model) == 8
    with pytest.raises(ValueError, match="exceeds the model's 8 positions"):
        loglikelihoods(model, tokenizer, [PAIRS[4]])


def test_real_transformer_matches_a_plain_forward(tokenizer, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    expected = []
    for context, continuation in PAIRS:
        context_ids, continuation_ids = encode_pair(tokenizer, context, continuation)
        expected.append(_forward_loglik(model, context_ids + continuation_ids, len(continuation_ids)))
    assert loglikelihoods(model, tokenizer, PAIRS, batch_size=3) == pytest.approx(expected, abs=1e-4)
    assert model.training is False
