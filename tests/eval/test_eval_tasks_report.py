import json

import pytest

from eval_helpers import FIXTURES
from ows.eval.report import compare_table, format_value, load_results, results_table, run_labels
from ows.eval.tasks import TaskSpec, check_unique, load_task_file, parse_task, parse_tasks


def test_parse_specs():
    assert parse_task("mmlu") == TaskSpec("mmlu", "mmlu")
    assert parse_task(" gsm8k ") == TaskSpec("gsm8k", "gsm8k")
    rg = parse_task("reasoning-gym:chain_sum")
    assert (rg.name, rg.kind, rg.argument) == ("reasoning-gym:chain_sum", "reasoning-gym", "chain_sum")
    mc = parse_task(f"mc:{FIXTURES / 'mc_tiny.jsonl'}")
    assert (mc.name, mc.kind, mc.path) == ("mc:mc_tiny", "multiple_choice", str(FIXTURES / "mc_tiny.jsonl"))
    assert parse_task("hub:boolq") == TaskSpec("boolq", "lm-eval", argument="boolq")
    assert [s.name for s in parse_tasks("mmlu,gsm8k,perplexity")] == ["mmlu", "gsm8k", "perplexity"]


@pytest.mark.parametrize("spec, message", [
    ("mmul", "unknown task 'mmul': use one of mmlu, "),
    ("reasoning-gym", "unknown task 'reasoning-gym'"),
    ("mc:/no/such.jsonl", "file '/no/such.jsonl' does not exist"),
    (",", "names no task"),
])
def test_bad_specs(spec, message):
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        parse_tasks(spec)
    assert message in str(err.value)
    if "unknown" in message:
        assert "reasoning-gym:TASK" in str(err.value) and "mc:FILE.jsonl" in str(err.value)


def test_task_file_resolves_paths_next_to_it():
    specs = load_task_file(FIXTURES / "tasks.yaml")
    assert [s.name for s in specs] == ["tiny-mc", "perplexity:text_tiny"]
    assert specs[0].path == str(FIXTURES / "mc_tiny.jsonl") and specs[0].num_fewshot == 1
    assert specs[0].fewshot_path == str(FIXTURES / "mc_shots.jsonl")


@pytest.mark.parametrize("entry, message", [
    ({"task": "mmlu", "shots": 3}, "task 1: unknown key 'shots'"),
    ({"name": "x"}, "task 1: field 'task' is missing"),
    ({"task": "mmlu", "num_fewshot": -1}, "task 1: field 'num_fewshot' is -1"),
    ({"task": "perplexity", "fewshot_path": "a.jsonl"}, "task 1: field 'fewshot_path' applies to"),
])
def test_bad_task_file_entries(tmp_path, entry, message):
    path = tmp_path / "t.json"
    path.write_text(json.dumps([entry]))
    with pytest.raises(ValueError, match=message):
        load_task_file(path)


def test_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="given twice"):
        check_unique(parse_tasks("mmlu,mmlu"))


def _doc(model, acc, n=10):
    return {"model": model, "backend": "builtin", "seconds": 3.0,
            "tasks": {"mmlu": {"metrics": {"acc": acc, "acc_stem": 0.5}, "n": n, "num_fewshot": 5,
                               "n_by_category": {"stem": 4}},
                      "perplexity": {"metrics": {"perplexity": 1234.5678, "nll": 7.1189}, "n": 3}}}


def test_formats_and_single_run_table():
    assert format_value("acc", 0.2712) == "27.1%"
    assert format_value("exact_match_strict", 1.0) == "100.0%"
    assert format_value("perplexity", 1234.5678) == "1235"
    assert format_value("nll", 7.11889) == "7.119"
    table = results_table(_doc("m", 0.25)).splitlines()
    assert table[:2] == ["| task | metric | value | n |", "|---|---|---|---|"]
    assert "| mmlu | acc | 25.0% | 10 |" in table and "| mmlu | acc_stem | 50.0% | 4 |" in table
    assert "| perplexity | perplexity | 1235 | 3 |" in table
    assert table[-1] == "(m, backend builtin, mmlu 5-shot, 3 s)"


def test_compare_table_side_by_side(tmp_path):
    a, b = _doc("base", 0.25), _doc("tuned", 0.3, n=20)
    del b["tasks"]["perplexity"]
    lines = compare_table([a, b], ["base", "tuned"]).splitlines()
    assert lines[0] == "| task | metric | base | tuned |"
    assert "| mmlu | acc | 25.0% | 30.0% |" in lines
    assert "| perplexity | nll | 7.119 | – |" in lines
    assert "(n differs for mmlu: base=10, tuned=20)" in lines
    assert run_labels(["x/run.json", "y/run.json", "z/other.json"]) == ["x/run", "y/run", "other"]


def test_load_results_refuses_other_files(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_doc("m", 0.1)))
    assert load_results(good)["model"] == "m"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"results": {}}))
    with pytest.raises(ValueError, match="bad.json' has no 'tasks' mapping"):
        load_results(bad)
    with pytest.raises(FileNotFoundError):
        load_results(tmp_path / "missing.json")
