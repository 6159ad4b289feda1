"""The real SmolLM2-135M on the shipped MMLU and GSM8K (a few minutes on CPU): structure and sanity, not scores."""

import math

import pytest

pytestmark = pytest.mark.slow

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def smollm2():
    from ows.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer("smollm2-135m", dtype="float32")
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def mmlu50(smollm2):
    from ows.eval import evaluate

    return evaluate(*smollm2, "mmlu", limit=50, log_samples=True)


def test_mmlu_50_items_by_category(mmlu50):
    entry = mmlu50["tasks"]["mmlu"]
    assert entry["n"] == 50 and entry["num_fewshot"] == 5
    assert set(entry["n_by_category"]) == {"humanities", "stem", "social_sciences", "other"}
    assert sum(entry["n_by_category"].values()) == 50
    assert all(0.0 <= value <= 1.0 for value in entry["metrics"].values())
    samples = mmlu50["samples"]["mmlu"]
    assert len({s["doc_id"] for s in samples}) == 50
    # a real model after 5 shots puts most of its next-token mass on the letters A-D
    letter_mass = [sum(math.exp(ll) for ll in s["loglikelihoods"]) for s in samples]
    assert sum(letter_mass) / len(letter_mass) > 0.5


def test_gsm8k_10_items_follow_the_fewshot_format(smollm2):
    from ows.eval import evaluate

    results = evaluate(*smollm2, "gsm8k", limit=10, log_samples=True)
    entry = results["tasks"]["gsm8k"]
    assert entry["n"] == 10 and entry["num_fewshot"] == 5
    assert set(entry["metrics"]) == {"exact_match", "exact_match_strict"}
    assert all(0.0 <= value <= 1.0 for value in entry["metrics"].values())
    samples = results["samples"]["gsm8k"]
    assert not any("Question:" in s["generation"] or "\n\n" in s["generation"] for s in samples)  # stopped
    # the model sometimes ends at once (eos), but mostly writes a worked answer ending '#### N' like the shots
    assert sum(s["answer_strict"] is not None for s in samples) >= 6


def test_lm_eval_bridge_agrees_on_the_real_model(smollm2, mmlu50):
    pytest.importorskip("lm_eval")
    from ows.eval import evaluate

    bridge = evaluate(*smollm2, "mmlu", backend="lm-eval", limit=20, log_samples=True)
    ours = {s["doc_id"]: s for s in mmlu50["samples"]["mmlu"]}
    theirs = bridge["samples"]["mmlu"]
    assert len(theirs) == 20
    for sample in theirs:
        assert sample["loglikelihoods"] == pytest.approx(ours[sample["doc_id"]]["loglikelihoods"], abs=2e-3)
        assert sample["acc"] == ours[sample["doc_id"]]["acc"]


def test_perplexity_of_news_text_is_that_of_a_trained_model(smollm2):
    from ows.eval import evaluate

    entry = evaluate(*smollm2, "perplexity", limit=10, perplexity_seq_len=256)["tasks"]["perplexity"]
    assert 5.0 < entry["metrics"]["perplexity"] < 100.0  # random weights give tens of thousands
    assert entry["tokens"] > 1000
