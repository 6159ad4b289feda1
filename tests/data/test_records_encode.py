"""ows.data (records, encode): loading local datasets, format detection, loss masks, truncation, packing, padding."""

from __future__ import annotations

import copy
import json
import logging
import re

import pytest
import torch

from ows.data.encode import EncodeStats, PadCollator, encode_dataset, encode_example
from ows.data.records import FORMATS, detect_format, load_records, split_train_eval, to_prompt_completion

datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")

ROWS = {
    "alpaca": [{"instruction": "Add the numbers.", "input": "3 and 4", "output": "7"},
               {"instruction": "What is 12 + 7?", "input": None, "output": "19"}],
    "prompt_completion": [{"prompt": "Question: What is 12 + 7? Answer:", "completion": " 19"},
                          {"prompt": "Calculate 5 - 3.", "completion": " 2"}],
    "text": [{"text": "The quick brown fox jumps over the lazy dog."}, {"text": "The capital of France is Paris."}],
    "messages": [{"messages": [{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": "What is 12 + 7?"},
                               {"role": "assistant", "content": "19"},
                               {"role": "user", "content": "And 3 + 4?"},
                               {"role": "assistant", "content": "7"}]}],
}
END = "<|im_end|>"


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return transformers.AutoTokenizer.from_pretrained(tiny_model_dir)


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _labelled(example):
    return [t for t in example["labels"] if t != -100]


@pytest.mark.parametrize("kind", ["jsonl", "json_list", "csv", "parquet", "save_to_disk", "dataset_dict"])
def test_load_records_file_types(tmp_path, kind):
    rows = ROWS["prompt_completion"]
    ds = datasets.Dataset.from_list(rows)
    if kind == "jsonl":
        path = _jsonl(tmp_path / "d.jsonl", rows)
    elif kind == "json_list":
        path = tmp_path / "d.json"
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif kind == "csv":
        path = tmp_path / "d.csv"
        ds.to_csv(str(path), index=False)
    elif kind == "parquet":
        path = tmp_path / "d.parquet"
        ds.to_parquet(str(path))
    elif kind == "save_to_disk":
        path = tmp_path / "saved"
        ds.save_to_disk(str(path))
    else:
        path = tmp_path / "saved_dict"
        other = datasets.Dataset.from_list([{"prompt": "x", "completion": "y"}])
        datasets.DatasetDict(train=other, test=ds).save_to_disk(str(path))
        assert load_records(str(path)) == [{"prompt": "x", "completion": "y"}]
        with pytest.raises(ValueError, match="has no split 'dev' .*splits: train, test.*dataset_split"):
            load_records(str(path), split="dev")
        assert load_records(str(path), split="test") == rows
        return
    assert load_records(str(path)) == rows


def test_csv_cells_stay_text(tmp_path):
    (tmp_path / "d.csv").write_text("instruction,input,output\nSay NA,,007\n", encoding="utf-8")
    assert load_records(str(tmp_path / "d.csv")) == [{"instruction": "Say NA", "input": None, "output": "007"}]


def test_load_records_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset='.*nope.jsonl' does not exist"):
        load_records(str(tmp_path / "nope.jsonl"))
    (tmp_path / "d.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"unsupported extension '.txt': use one of .json, .jsonl, .csv, .parquet"):
        load_records(str(tmp_path / "d.txt"))
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "empty.json").write_text("[]")
    (tmp_path / "header.csv").write_text("prompt,completion\n")
    for name in ["empty.jsonl", "empty.json", "header.csv"]:
        with pytest.raises(ValueError, match=f"dataset='.*{name}' has no rows"):
            load_records(str(tmp_path / name))
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"text": "b"\n')
    with pytest.raises(ValueError, match="dataset='.*bad.jsonl' could not be read as json"):
        load_records(str(tmp_path / "bad.jsonl"))
    (tmp_path / "latin.jsonl").write_bytes('{"text": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(ValueError, match="dataset='.*latin.jsonl' could not be read .*UTF-8"):
        load_records(str(tmp_path / "latin.jsonl"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="not one saved with datasets' save_to_disk"):
        load_records(str(tmp_path / "folder"))


@pytest.mark.parametrize("fmt", ["alpaca", "prompt_completion", "text", "messages"])
def test_detect_format_auto_and_explicit(fmt):
    assert detect_format(ROWS[fmt]) == fmt
    assert detect_format(ROWS[fmt], fmt) == fmt


def test_detect_format_errors():
    with pytest.raises(ValueError, match=r"has columns \['question'\] that match no format .*alpaca needs instr"):
        detect_format([{"question": "q"}])
    rows = ROWS["alpaca"] + [{"instruction": "x", "input": None, "output": None}]
    with pytest.raises(ValueError, match=r"dataset='x.jsonl' row 3 is missing field 'output' \(format alpaca needs "
                                         r"instruction, output; optional input\): fix the file or set dataset_format"):
        detect_format(rows, "alpaca", source="dataset='x.jsonl'")
    with pytest.raises(ValueError, match="row 1 is missing field 'prompt'"):
        detect_format(ROWS["text"], "prompt_completion")
    with pytest.raises(ValueError, match="row 1 is missing field 'messages"):
        detect_format([{"messages": [{"role": "user"}]}], "messages")
    with pytest.raises(ValueError, match="dataset_format='chat' is unknown: use one of " + ", ".join(FORMATS)):
        detect_format(ROWS["text"], "chat")


def test_to_prompt_completion():
    prompt, completion = to_prompt_completion(ROWS["alpaca"][0], "alpaca")
    assert prompt.startswith("Below is an instruction that describes a task, paired with an input")
    assert prompt.endswith("### Instruction:\nAdd the numbers.\n\n### Input:\n3 and 4\n\n### Response:\n")
    assert completion == "7"
    prompt, _ = to_prompt_completion(ROWS["alpaca"][1], "alpaca")
    assert "### Input" not in prompt and prompt.endswith("### Instruction:\nWhat is 12 + 7?\n\n### Response:\n")
    assert to_prompt_completion({"instruction": "i", "output": 7}, "alpaca")[1] == "7"  # CSV numbers
    assert to_prompt_completion(ROWS["text"][0], "text") == ("", ROWS["text"][0]["text"])
    with pytest.raises(ValueError, match="encode_example for messages"):
        to_prompt_completion(ROWS["messages"][0], "messages")


@pytest.mark.parametrize("fmt", ["alpaca", "prompt_completion"])
def test_prompt_tokens_masked(tok, fmt):
    for row in ROWS[fmt]:
        prompt, completion = to_prompt_completion(row, fmt)
        example = encode_example(row, fmt, tok, 512)
        n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
        assert example["input_ids"][:n_prompt] == tok(prompt, add_special_tokens=False)["input_ids"]
        assert example["labels"][:n_prompt] == [-100] * n_prompt
        assert -100 not in example["labels"][n_prompt:]
        assert example["input_ids"][-1] == tok.eos_token_id
        assert tok.decode(_labelled(example)) == completion + END
        assert example["attention_mask"] == [1] * len(example["input_ids"])
        full = encode_example(row, fmt, tok, 512, completion_only_loss=False)
        assert full["labels"] == full["input_ids"] == example["input_ids"]


def test_text_labels_everything(tok):
    example = encode_example(ROWS["text"][0], "text", tok, 512)
    assert example["labels"] == example["input_ids"]
    assert tok.decode(example["input_ids"]) == ROWS["text"][0]["text"] + END


def test_messages_only_assistant_labelled(tok):
    row = ROWS["messages"][0]
    example = encode_example(row, "messages", tok, 512)
    assert tok.decode(example["input_ids"]) == tok.apply_chat_template(row["messages"], tokenize=False)
    assert tok.decode(_labelled(example)) == "19" + END + "7" + END
    spans = "".join("L" if t != -100 else "." for t in example["labels"]).split(".")
    assert len([s for s in spans if s]) == 2  # two separate assistant turns
    full = encode_example(row, "messages", tok, 512, completion_only_loss=False)
    assert full["labels"] == full["input_ids"] == example["input_ids"]
    stats = EncodeStats()
    no_reply = {"messages": [{"role": "user", "content": "hi"}]}
    assert encode_example(no_reply, "messages", tok, 512, stats=stats) is None and stats.dropped_empty == 1
    plain = copy.deepcopy(tok)
    plain.chat_template = None
    with pytest.raises(ValueError, match="needs a tokenizer with a chat_template: use a tokenizer with a chat "
                                         "template, the path of a Jinja file as template, or dataset_format "
                                         "prompt_completion"):
        encode_example(row, "messages", plain, 512)


def test_truncation_and_dropping(tok):
    row = {"prompt": "The quick brown fox jumps over the lazy dog.", "completion": " Paris is the capital of France."}
    n_prompt = len(tok(row["prompt"], add_special_tokens=False)["input_ids"])
    stats = EncodeStats()
    example = encode_example(row, "prompt_completion", tok, n_prompt + 2, stats=stats)
    assert len(example["input_ids"]) == n_prompt + 2 and len(_labelled(example)) == 2
    assert encode_example(row, "prompt_completion", tok, n_prompt, stats=stats) is None
    assert stats == EncodeStats(examples=1, truncated=2, dropped_empty=1, tokens=n_prompt + 2)


def test_encode_dataset_stats_and_warning(tok, caplog):
    rows = ROWS["prompt_completion"] + [{"prompt": "x", "completion": " a long long long answer " * 8}]
    with caplog.at_level(logging.INFO, logger="ows.data.encode"):
        encoded, stats = encode_dataset(rows, "auto", tok, 24)
    assert stats.examples == len(encoded) == 3 and stats.truncated == 1
    assert stats.tokens == sum(len(e["input_ids"]) for e in encoded)
    assert "1 of 3 examples were longer than max_seq_length=24 and were truncated" in caplog.text
    assert any(r.levelno == logging.INFO and "encoded 3 of 3" in r.message for r in caplog.records)
    with pytest.raises(ValueError, match="no examples left after encoding 2 rows .*raise max_seq_length"):
        encode_dataset(ROWS["prompt_completion"], "prompt_completion", tok, 1)
    with pytest.raises(ValueError, match="row 1 is missing field 'text'"):
        encode_dataset(ROWS["alpaca"], "text", tok, 64)


def test_packing_blocks(tok):
    rows = ROWS["alpaca"] * 3
    plain, _ = encode_dataset(rows, "alpaca", tok, 1024)
    packed, _ = encode_dataset(rows, "alpaca", tok, 1024, packing=True)
    assert len(packed) == 1 and packed[0]["input_ids"] == sum((e["input_ids"] for e in plain), [])
    assert packed[0]["labels"] == sum((e["labels"] for e in plain), [])
    text_plain, _ = encode_dataset(ROWS["text"] * 5, "text", tok, 512)
    packed, _ = encode_dataset(ROWS["text"] * 5, "text", tok, 16, packing=True)
    assert all(len(b["input_ids"]) == 16 for b in packed[:-1]) and 0 < len(packed[-1]["input_ids"]) <= 16
    assert sum((b["input_ids"] for b in packed), []) == sum((e["input_ids"] for e in text_plain), [])


def test_packing_preserves_label_tokens(tok):
    rows = ROWS["prompt_completion"] * 4
    plain, _ = encode_dataset(rows, "prompt_completion", tok, 512)
    packed, _ = encode_dataset(rows, "prompt_completion", tok, 8, packing=True)
    assert all(len(b["input_ids"]) == 8 for b in packed[:-1])
    assert sum(len(_labelled(b)) for b in packed) == sum(len(_labelled(e)) for e in plain)
    assert all(_labelled(b) for b in packed)  # blocks with no labelled token are dropped


def test_packed_examples_do_not_attend_to_each_other(tok, tiny_model_dir):
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    rows = ROWS["text"] + [{"text": "Another short line, packed after the others."}]
    alone, _ = encode_dataset(rows, "text", tok, 512)
    packed, _ = encode_dataset(rows, "text", tok, 512, packing=True)
    assert len(packed) == 1 and "attention_mask" not in packed[0]
    starts = [sum(len(e["input_ids"]) for e in alone[:i]) for i in range(len(alone))]
    assert [packed[0]["position_ids"][s] for s in starts] == [0] * len(alone)
    assert all(packed[0]["labels"][s] == -100 for s in starts[1:])  # not predicted from the example before
    batch = PadCollator(tok.pad_token_id)(packed)
    with torch.no_grad():
        # as in training: no cache (the Trainer sets use_cache false), so transformers reads the packing off position_ids
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        for start, example in zip(starts, alone):
            own = model(input_ids=torch.tensor([example["input_ids"]])).logits[0]
            assert torch.allclose(logits[start:start + len(own)], own, atol=1e-5)


def test_templates_render_rows_as_asked(tok):
    from ows.data.records import render_style, row_text

    assert render_style("alpaca", "auto", tok) == "chat" and render_style("prompt_completion", "auto", tok) == "chat"
    assert render_style("prompt_completion", "auto", tok, plain_prompts=True) == "plain"  # reasoning-gym as before
    plain_tok = copy.deepcopy(tok)
    plain_tok.chat_template = None
    assert render_style("alpaca", "auto", plain_tok) == "alpaca"
    assert render_style("prompt_completion", "auto", plain_tok) == "plain"
    assert render_style("text", "auto", tok) == "plain" and render_style("alpaca", "none", tok) == "plain"
    assert render_style("prompt_completion", "alpaca", tok) == "alpaca"
    with pytest.raises(ValueError, match="template='none' cannot render messages rows"):
        render_style("messages", "none", tok)
    row = ROWS["alpaca"][0]
    chat = row_text(row, "alpaca", "chat", tok)
    assert chat == "<|im_start|>user\nAdd the numbers.\n\n3 and 4<|im_end|>\n<|im_start|>assistant\n7<|im_end|>\n"
    example = encode_example(row, "alpaca", tok, 512, style="chat")
    assert tok.decode(_labelled(example)) == "7" + END  # the assistant's reply and end of turn, as for messages
    assert "Below is an instruction" in row_text(row, "alpaca", "alpaca", tok)
    assert row_text(row, "alpaca", "plain", tok) == "Add the numbers.\n3 and 4\n7"


def test_split_train_eval():
    items = list(range(20))
    train, evals = split_train_eval(items, 0.25, seed=3)
    assert len(evals) == 5 and sorted(train + evals) == items
    assert (train, evals) == split_train_eval(items, 0.25, seed=3)
    assert evals != split_train_eval(items, 0.25, seed=4)[1]
    assert split_train_eval(items, 0.0, seed=3) == (items, [])
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=f"eval_split_ratio={bad} must be in \\[0, 1\\)"):
            split_train_eval(items, bad, seed=0)


def test_pad_collator(tok):
    examples = [{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7]},
                {"input_ids": [8], "attention_mask": [1], "labels": [8]}]
    batch = PadCollator(tok.pad_token_id)(examples)
    pad = tok.pad_token_id
    assert all(v.dtype == torch.long for v in batch.values())
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, pad, pad]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert PadCollator(pad, pad_to_multiple_of=8)(examples)["input_ids"].shape == (2, 8)
    encoded, _ = encode_dataset(ROWS["alpaca"], "auto", tok, 512)
    loader = torch.utils.data.DataLoader(encoded, batch_size=2, collate_fn=PadCollator(pad))
    batch = next(iter(loader))
    assert batch["labels"].shape == batch["input_ids"].shape == (2, max(len(e["input_ids"]) for e in encoded))
    with pytest.raises(ValueError, match="pad_token_id is None"):
        PadCollator(None)


@pytest.mark.parametrize("value, shown", [(float("nan"), "float nan"), (float("inf"), "float inf"),
                                          (["1"], 'list ["1"]'), ({"a": 1}, 'dict {"a": 1}'), (True, "bool true")])
def test_a_value_that_is_not_text_is_refused_with_its_row_and_field(value, shown):
    rows = [{"prompt": "a", "completion": " b"}, {"prompt": "c", "completion": value}]
    with pytest.raises(ValueError, match=rf"d.jsonl row 2 field 'completion' is {re.escape(shown)}, not text"):
        detect_format(rows, "auto", "d.jsonl")


def test_numbers_stay_text_and_an_all_empty_trained_field_is_refused():
    assert detect_format([{"prompt": 12, "completion": 19}, {"prompt": "x", "completion": 1.5}]) == "prompt_completion"
    assert to_prompt_completion({"prompt": 12, "completion": 19}, "prompt_completion") == ("12", "19")
    with pytest.raises(ValueError, match="every row's 'text' is empty, so there is no token to train on"):
        detect_format([{"text": ""}] * 3, "auto", "d.jsonl")
    with pytest.raises(ValueError, match="every row's 'output' is empty"):
        detect_format([{"instruction": "say nothing", "output": ""}], "alpaca", "d.jsonl")
    detect_format([{"text": ""}, {"text": "one row with text"}])  # some empty rows are fine
