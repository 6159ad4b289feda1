"""The data of a run: which template renders which rows, TRL's text column, calibration text from the data itself."""

import json

import pytest

transformers = pytest.importorskip("transformers")
import ows  # noqa: E402
from ows.recipe.data import load_datasets  # noqa: E402

ALPACA = [{"instruction": f"Add {a} and {b}.", "input": "", "output": str(a + b)} for a in range(5) for b in range(4)]
JINJA = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}" \
        "{% if add_generation_prompt %}[assistant] {% endif %}"


@pytest.fixture
def tok(tiny_model_dir):
    return transformers.AutoTokenizer.from_pretrained(tiny_model_dir)


def _script(dataset, **extra):
    return ows.ScriptArguments(model="m", dataset=dataset, num_train_examples=8, num_heldout_examples=4, **extra)


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_auto_uses_the_chat_template_for_alpaca_rows_and_keeps_reasoning_gym_plain(tok, tmp_path):
    data = load_datasets(_script(_jsonl(tmp_path / "a.jsonl", ALPACA), eval_split_ratio=0.2), tok)
    first = tok.decode(data.train[0]["input_ids"])
    assert first.startswith("<|im_start|>user\nAdd ") and "Below is an instruction" not in first
    held = data.heldout[0]
    assert held["chat"] and held["prompt"].endswith("<|im_start|>assistant\n") and held["completion"] == held["output"]
    gym = load_datasets(_script("reasoning-gym:chain_sum"), tok)
    assert tok.decode(gym.train[0]["input_ids"]).startswith("Question: ") and not gym.heldout[0].get("chat")
    alpaca = load_datasets(_script(_jsonl(tmp_path / "b.jsonl", ALPACA), template="alpaca"), tok)
    assert tok.decode(alpaca.train[0]["input_ids"]).startswith("Below is an instruction")


def test_a_jinja_file_becomes_the_chat_template_and_travels_with_the_tokenizer(tok, tmp_path):
    template = tmp_path / "chat.jinja"
    template.write_text(JINJA)
    data = load_datasets(_script(_jsonl(tmp_path / "a.jsonl", ALPACA), template=str(template)), tok)
    assert tok.decode(data.train[0]["input_ids"]).startswith("[user] Add 0 and 0.\n[assistant] 0")
    assert tok.chat_template == JINJA  # saved with the model by save_pretrained


def test_dataset_text_field_names_the_text_column_and_training_text_serves_as_calibration(tok, tmp_path):
    rows = [{"content": f"The sum of {a} and {b} is {a + b}."} for a in range(5) for b in range(4)]
    data = load_datasets(_script(_jsonl(tmp_path / "t.jsonl", rows), dataset_text_field="content"), tok)
    assert len(data.train) == 20 and data.texts[0] == "The sum of 0 and 0 is 0."
    with pytest.raises(ValueError, match="dataset_text_field='body' is not a column of .* \\(columns: content\\)"):
        load_datasets(_script(_jsonl(tmp_path / "u.jsonl", rows), dataset_text_field="body"), tok)


def test_without_gensim_the_profile_is_measured_on_the_training_text_and_the_log_says_so(tok, monkeypatch, caplog):
    import logging

    from ows.data import calibration
    from ows.recipe.profiling import calibration_source

    def missing():
        raise FileNotFoundError("the built-in calibration text needs the package gensim")

    monkeypatch.setattr(calibration, "builtin_calibration_path", missing)
    script = _script("reasoning-gym:chain_sum")
    data = load_datasets(script, tok)
    with caplog.at_level(logging.INFO, logger="ows"):
        texts, source = calibration_source(script, training_texts=data.texts)
    assert texts == data.texts and texts[0].startswith("Question: ") and source == "dataset:reasoning-gym:chain_sum"
    assert "needs gensim (not installed): profiling on 8 rows of the training data" in caplog.text
    with pytest.raises(ows.UsageError, match="needs the package gensim"):  # ows analyze has no training data
        calibration_source(script)
