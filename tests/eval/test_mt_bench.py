"""ows eval --tasks mt-bench:FILE: two-turn answers in FastChat's model_answer format, and bad question files."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")
from ows.cli import main  # noqa: E402
from ows.eval import mt_bench  # noqa: E402

QUESTIONS = [
    {"question_id": 81, "category": "writing", "turns": ["Write a haiku about the sea.", "Now make it rhyme."]},
    {"question_id": 82, "category": "math", "turns": ["What is 2 + 3?", "And times 4?"]},
]


def _questions(path, rows=QUESTIONS):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_two_questions_on_a_tiny_chat_model(tiny_model_dir, tmp_path, capsys):
    questions = _questions(tmp_path / "question.jsonl")
    out = tmp_path / "out" / "results.json"
    out.parent.mkdir()
    assert main(["eval", str(tiny_model_dir), "--tasks", f"mt-bench:{questions}", "--max-gen-tokens", "6",
                 "--model-id", "tiny-ows", "--output", str(out)]) == 0
    assert "wrote 2 MT-Bench answers" in capsys.readouterr().out
    rows = [json.loads(line) for line in (tmp_path / "out" / "mt_bench" / "model_answer" / "tiny-ows.jsonl").open()]
    assert [r["question_id"] for r in rows] == [81, 82]
    for row in rows:  # FastChat's model_answer row
        assert set(row) == {"question_id", "answer_id", "model_id", "choices", "tstamp"} and row["model_id"] == "tiny-ows"
        assert len(row["choices"]) == 1 and row["choices"][0]["index"] == 0
        assert len(row["choices"][0]["turns"]) == 2 and all(isinstance(t, str) for t in row["choices"][0]["turns"])
    result = json.loads(out.read_text())["tasks"]["mt-bench:question"]
    assert result["metrics"]["questions"] == 2 and result["metrics"]["turns"] == 4


def test_the_second_turn_sees_the_first_answer(monkeypatch):
    import ows.eval.generation as generation

    seen = []

    def fake_generate(model, tokenizer, prompts, stop, max_new_tokens, batch_size, desc, add_special_tokens):
        seen.append(list(prompts))
        assert add_special_tokens is False  # the chat template puts the special tokens in
        return [f"answer{len(seen)}-{i}" for i in range(len(prompts))]

    class Template:
        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return "|".join(f"{m['role']}:{m['content']}" for m in messages) + "|assistant:"

    monkeypatch.setattr(generation, "generate_until", fake_generate)
    answers = mt_bench.answer_questions(None, Template(), QUESTIONS, 8, 4)
    assert answers == [["answer1-0", "answer2-0"], ["answer1-1", "answer2-1"]]
    assert seen[1][0] == ("user:Write a haiku about the sea.|assistant:answer1-0|user:Now make it rhyme.|assistant:")


@pytest.mark.parametrize("rows, message", [
    ([{"question_id": 1, "category": "x"}], "field 'turns' is missing"),
    ([{"turns": ["a", "b"]}], "field 'question_id' is missing"),
    ([{"question_id": 1, "turns": "a"}], "turns must be a non-empty list of non-empty strings"),
    ([{"question_id": 1, "turns": ["a", ""]}], "turns must be a non-empty list of non-empty strings"),
    ([{"question_id": 1, "turns": ["a"]}, {"question_id": 1, "turns": ["b"]}], "question_id 1 appears twice"),
    ([{"question_id": [1], "turns": ["a"]}], "question_id is list"),
])
def test_a_file_not_in_fastchat_format_is_one_line_and_writes_nothing(tiny_model_dir, tmp_path, capsys, rows, message):
    questions = _questions(tmp_path / "q.jsonl", rows)
    out = tmp_path / "results.json"
    assert main(["eval", str(tiny_model_dir), "--tasks", f"mt-bench:{questions}", "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists() and not (tmp_path / "mt_bench").exists()


def test_bare_mt_bench_names_the_missing_file(tiny_model_dir, capsys):
    assert main(["eval", str(tiny_model_dir), "--tasks", "mt-bench"]) == 2
    assert "needs the questions file, which is not shipped on PyPI" in capsys.readouterr().err


def test_a_model_without_a_chat_template_is_refused_before_it_loads(tiny_model_dir, tmp_path, capsys):
    import shutil

    plain = tmp_path / "plain"
    shutil.copytree(tiny_model_dir, plain)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    out = tmp_path / "results.json"
    assert main(["eval", str(plain), "--tasks", f"mt-bench:{_questions(tmp_path / 'q.jsonl')}", "--output", str(out)]) == 2
    assert "needs a chat model" in capsys.readouterr().err and not out.exists()
