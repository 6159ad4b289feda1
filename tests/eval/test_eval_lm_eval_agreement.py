"""The built-in evaluators and the lm-eval bridge score the same prompts the same way (tiny model, offline)."""

import pytest

pytest.importorskip("transformers")
pytest.importorskip("lm_eval", reason="pip install lm-eval==0.4.13")

from eval_helpers import FIXTURES  # noqa: E402
from ows.eval import evaluate  # noqa: E402

TASKS = [f"mmlu:{FIXTURES / 'mmlu_tiny.jsonl'}", f"mc:{FIXTURES / 'mc_tiny.jsonl'}", f"gsm8k:{FIXTURES / 'gsm8k_tiny.jsonl'}"]


@pytest.fixture(scope="module")
def both(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)
    settings = dict(num_fewshot=2, per_device_eval_batch_size=4, max_new_tokens=8, log_samples=True)
    return {backend: evaluate(model, tokenizer, TASKS, backend=backend, **settings) for backend in ("builtin", "lm-eval")}


def _by_doc(results, task):
    return {s["doc_id"]: s for s in results["samples"][task]}


@pytest.mark.parametrize("task", ["mmlu:mmlu_tiny", "mc:mc_tiny"])
def test_same_loglikelihoods_and_accuracy(both, task):
    ours, theirs = _by_doc(both["builtin"], task), _by_doc(both["lm-eval"], task)
    assert sorted(ours) == sorted(theirs) and len(ours) >= 4
    for doc_id, sample in ours.items():
        assert sample["prompt"] == theirs[doc_id]["prompt"]
        assert sample["loglikelihoods"] == pytest.approx(theirs[doc_id]["loglikelihoods"], abs=1e-4)
        assert (sample["acc"], sample["acc_norm"]) == (theirs[doc_id]["acc"], theirs[doc_id]["acc_norm"])
    assert both["builtin"]["tasks"][task]["metrics"] == pytest.approx(both["lm-eval"]["tasks"][task]["metrics"])


def test_mmlu_categories_are_reported_by_both(both):
    for backend in ("builtin", "lm-eval"):
        entry = both[backend]["tasks"]["mmlu:mmlu_tiny"]
        assert entry["n_by_category"] == {"humanities": 2, "other": 1, "social_sciences": 1, "stem": 5}
        assert {"acc_humanities", "acc_stem", "acc_social_sciences", "acc_other"} <= set(entry["metrics"])


def test_same_greedy_generations_for_gsm8k(both):
    ours, theirs = _by_doc(both["builtin"], "gsm8k:gsm8k_tiny"), _by_doc(both["lm-eval"], "gsm8k:gsm8k_tiny")
    assert [ours[i]["generation"] for i in sorted(ours)] == [theirs[i]["generation"] for i in sorted(theirs)]
    for backend in ("builtin", "lm-eval"):
        metrics = both[backend]["tasks"]["gsm8k:gsm8k_tiny"]["metrics"]
        assert set(metrics) == {"exact_match", "exact_match_strict"}


def test_evaluates_an_in_memory_model_right_after_training(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ows.data.calibration import read_texts, token_stream

    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)
    task = f"perplexity:{FIXTURES / 'text_tiny.txt'}"
    before = evaluate(model, tokenizer, task, perplexity_seq_len=64)["tasks"]["perplexity:text_tiny"]["metrics"]["perplexity"]
    ids = torch.tensor([token_stream(tokenizer, read_texts(FIXTURES / "text_tiny.txt"))])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(5):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = evaluate(model, tokenizer, task, perplexity_seq_len=64)["tasks"]["perplexity:text_tiny"]["metrics"]["perplexity"]
    assert after < before / 2
    assert model.training  # evaluation puts the model back in training mode


def test_lm_eval_metric_names_become_ours():
    from ows.eval.lm_eval_bridge import _entry, convert_metrics
    from ows.eval.runner import Prepared
    from ows.eval.tasks import parse_task

    raw = {"alias": "gsm8k", "exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": 0.1,
           "exact_match,flexible-extract": 0.5, "acc,none": 0.3, "acc_norm,none": 0.4, "word_perplexity,none": 12.0}
    assert convert_metrics(raw) == {"exact_match_strict": 0.25, "exact_match": 0.5, "acc": 0.3, "acc_norm": 0.4,
                                    "word_perplexity": 12.0}
    hub = Prepared(parse_task("hub:mmlu"), 5, None)
    output = {"results": {"mmlu": {"acc,none": 0.3}, "mmlu_stem": {"acc,none": 0.2}, "mmlu_anatomy": {"acc,none": 0.1}},
              "groups": {"mmlu": {}, "mmlu_stem": {}}, "n-samples": {}}
    entry, samples = _entry(hub, output)
    assert entry["metrics"] == {"acc": 0.3, "acc_mmlu_stem": 0.2} and entry["kind"] == "lm-eval" and samples == []
