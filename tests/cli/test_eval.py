import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from ows.cli import main  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "eval"
MMLU = f"mmlu:{FIXTURES / 'mmlu_tiny.jsonl'}"
GSM8K = f"gsm8k:{FIXTURES / 'gsm8k_tiny.jsonl'}"
TEXT = f"perplexity:{FIXTURES / 'text_tiny.txt'}"
SMALL = ["--limit", "4", "--num-fewshot", "1", "--max-gen-tokens", "8", "--seq-len", "64", "--batch-size", "4"]


def _run(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["eval", *argv])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def evaluated(tiny_model_dir, tmp_path_factory):
    """One run over every built-in evaluator: (exit code, stdout, results document, path)."""
    path = tmp_path_factory.mktemp("eval") / "run.json"
    tasks = ",".join([MMLU, GSM8K, "reasoning-gym:chain_sum"])  # + tiny-mc and perplexity:text_tiny from the file
    code, stdout = _run([str(tiny_model_dir), "--tasks", tasks, "--task-file", str(FIXTURES / "tasks.yaml"),
                         *SMALL, "--output", str(path)])
    return code, stdout, json.loads(path.read_text()), path


def test_results_json_has_every_task_with_sane_metrics(evaluated, tiny_model_dir):
    code, _, doc, _ = evaluated
    assert code == 0
    assert doc["format"] == "ows-eval/1" and doc["backend"] == "builtin" and doc["model"] == tiny_model_dir.name
    assert doc["settings"]["limit"] == 4 and doc["settings"]["num_fewshot"] == 1
    tasks = doc["tasks"]
    assert list(tasks) == ["mmlu:mmlu_tiny", "gsm8k:gsm8k_tiny", "reasoning-gym:chain_sum", "tiny-mc",
                           "perplexity:text_tiny"]
    mmlu = tasks["mmlu:mmlu_tiny"]
    assert mmlu["n"] == 4 and mmlu["num_fewshot"] == 1 and sum(mmlu["n_by_category"].values()) == 4
    assert all(0 <= v <= 1 for v in mmlu["metrics"].values())
    assert set(tasks["gsm8k:gsm8k_tiny"]["metrics"]) == {"exact_match", "exact_match_strict"}
    ppl = tasks["perplexity:text_tiny"]
    assert ppl["metrics"]["perplexity"] > 1 and ppl["tokens"] > 10 and ppl["num_fewshot"] is None
    rg = tasks["reasoning-gym:chain_sum"]
    assert rg["n"] == 4 and rg["metrics"]["answer_loss"] > 0 and 0 <= rg["metrics"]["exact_match"] <= 1
    assert tasks["tiny-mc"]["num_fewshot"] == 1 and tasks["tiny-mc"]["n"] == 4  # from the task file
    assert "samples" not in doc


def test_stdout_is_a_markdown_table(evaluated):
    _, stdout, doc, path = evaluated
    lines = stdout.splitlines()
    assert lines[:2] == ["| task | metric | value | n |", "|---|---|---|---|"]
    acc = doc["tasks"]["mmlu:mmlu_tiny"]["metrics"]["acc"]
    assert f"| mmlu:mmlu_tiny | acc | {100 * acc:.1f}% | 4 |" in lines
    assert lines[-1] == f"wrote {path}"


def test_duplicate_task_names_exit_2(tiny_model_dir, tmp_path, capsys):
    # tasks.yaml also holds perplexity:text_tiny: the same name twice is refused before any work
    code = main(["eval", str(tiny_model_dir), "--tasks", TEXT, "--task-file", str(FIXTURES / "tasks.yaml"),
                 "--output", str(tmp_path / "r.json")])
    assert code == 2 and "given twice" in capsys.readouterr().err


def test_json_flag_and_log_samples(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout = _run([str(tiny_model_dir), "--tasks", MMLU, "--limit", "2", "--num-fewshot", "0",
                         "--json", "--log-samples"])
    assert code == 0
    doc = json.loads(stdout)
    default_path = tmp_path / f"ows-eval-{tiny_model_dir.name}.json"
    assert json.loads(default_path.read_text()) == doc
    samples = doc["samples"]["mmlu:mmlu_tiny"]
    assert len(samples) == 2 and samples[0]["prompt"].endswith("Answer:") and len(samples[0]["loglikelihoods"]) == 4


def test_compare_prints_runs_side_by_side(evaluated, tmp_path, capsys):
    _, _, shared, path = evaluated
    doc = json.loads(json.dumps(shared))  # a copy: the module's other tests read the original
    other = tmp_path / "tuned.json"
    doc["tasks"]["mmlu:mmlu_tiny"]["metrics"]["acc"] = 0.75
    other.write_text(json.dumps(doc))
    assert main(["eval", "--compare", str(path), str(other)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| task | metric | run | tuned |"
    row = next(line for line in lines if line.startswith("| mmlu:mmlu_tiny | acc |"))
    assert row.endswith("| 75.0% |")


def test_lm_eval_backend_from_the_command_line(evaluated, tiny_model_dir, tmp_path):
    pytest.importorskip("lm_eval")
    path = tmp_path / "lm.json"
    code, stdout = _run([str(tiny_model_dir), "--tasks", MMLU, *SMALL, "--backend", "lm-eval", "--output", str(path)])
    assert code == 0 and "backend lm-eval" in stdout
    doc = json.loads(path.read_text())
    assert doc["backend"] == "lm-eval"
    assert doc["tasks"]["mmlu:mmlu_tiny"]["metrics"]["acc"] == evaluated[2]["tasks"]["mmlu:mmlu_tiny"]["metrics"]["acc"]


def test_output_replaces_only_a_results_file_ows_eval_wrote(evaluated, tiny_model_dir, tmp_path, capsys):
    _, _, doc, path = evaluated
    cheap = [str(tiny_model_dir), "--tasks", TEXT, "--limit", "2", "--seq-len", "32", "--output"]
    again = tmp_path / "again.json"
    shutil.copy(path, again)
    legacy = tmp_path / "legacy.json"  # written before the format marker
    legacy.write_text(json.dumps({k: v for k, v in doc.items() if k != "format"}))
    for target in (again, legacy):
        assert _run([*cheap, str(target)])[0] == 0
        assert list(json.loads(target.read_text())["tasks"]) == ["perplexity:text_tiny"]
    run_results = tmp_path / "results.json"
    run_results.write_text(json.dumps({"method": "ows", "before": {}, "after": {}}))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"not json")
    for target in (run_results, weights):
        before = target.read_bytes()
        assert _run([*cheap, str(target)])[0] == 2
        assert "is not a results file written by ows eval" in capsys.readouterr().err
        assert target.read_bytes() == before


def test_help_exits_zero(capsys):
    assert main(["eval", "--help"]) == 0
    text = capsys.readouterr().out
    assert "ows eval" in text and "--compare" in text and "reasoning-gym:TASK" in text


def _bad_mc(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "choices": ["a", "b"], "gold": 0}\n{"question": "q", "gold": 1}\n')
    return path


def _no_tokenizer(tmp_path, model_dir):
    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(Path(model_dir) / name, folder / name)
    return folder


@pytest.mark.parametrize("case, args, expected", [
    ("unknown task", ["{model}", "--tasks", "mmlu,hellaswag"], "unknown task 'hellaswag': use one of mmlu,"),
    ("missing field", ["{model}", "--tasks", "mc:{bad}"], "bad.jsonl line 2: field 'choices' is missing"),
    ("no tokenizer", ["{notok}", "--tasks", "mmlu"], "folder without a tokenizer"),
    ("missing model", ["{tmp}/nope", "--tasks", "mmlu"], "does not exist"),
    ("missing file", ["{model}", "--tasks", "perplexity:{tmp}/nope.txt"], "does not exist"),
    ("no tasks", ["{model}"], "--tasks is required"),
    ("zero limit", ["{model}", "--tasks", "mmlu", "--limit", "0"], "--limit 0 is invalid"),
    ("stride too long", ["{model}", "--tasks", "perplexity", "--seq-len", "8", "--stride", "8"], "--stride 8 is invalid"),
    ("hub without backend", ["{model}", "--tasks", "hub:boolq"], "add --backend lm-eval"),
    ("unknown reasoning task", ["{model}", "--tasks", "reasoning-gym:no_such_task"], "no_such_task"),
    ("compare and model", ["{model}", "--compare", "{bad}"], "--compare takes only results files"),
    ("compare non-results", ["--compare", "{bad}"], "is not JSON"),
])
def test_bad_input_exits_2_with_one_line(case, args, expected, tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OWS_LOG_LEVEL", "WARNING")
    out = tmp_path / "out.json"
    fill = dict(tmp=tmp_path, model=tiny_model_dir, bad=_bad_mc(tmp_path), notok=_no_tokenizer(tmp_path, tiny_model_dir))
    argv = [a.format(**fill) for a in args]
    assert main(["eval", *argv, "--output", str(out)]) == 2, case
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ows eval: error:"), captured.err
    assert expected in lines[0]
    assert not out.exists()


def test_mt_bench_answers_replace_only_answers_ows_eval_wrote(tmp_path):
    from ows.cli.common import UsageError
    from ows.cli.eval import answers_path, parse

    command = parse(["m", "--tasks", "mt-bench:q.jsonl", "--answers-dir", str(tmp_path)])
    target = tmp_path / "demo.jsonl"
    assert answers_path(command, tmp_path / "r.json", "demo") == target  # new
    target.write_text(json.dumps({"question_id": 81, "answer_id": "a", "model_id": "demo", "choices": []}) + "\n")
    assert answers_path(command, tmp_path / "r.json", "demo") == target  # written by ows eval
    target.write_text("my notes\n")
    with pytest.raises(UsageError, match="is not an answers file written by ows eval"):
        answers_path(command, tmp_path / "r.json", "demo")
    target.unlink()
    target.symlink_to(tmp_path / "r.json")
    with pytest.raises(UsageError, match="is not an answers file written by ows eval"):
        answers_path(command, tmp_path / "r.json", "demo")


def test_eval_on_the_yaml_that_trained_a_run_evaluates_the_run(tiny_model_dir, tmp_path, caplog):
    import logging

    from test_train import fast

    out = tmp_path / "run"
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {tiny_model_dir}\noutput_dir: {out}\n")
    assert main(["eval", str(config), "--tasks", TEXT, "--output", str(tmp_path / "base.json")]) == 0  # no run yet
    assert json.loads((tmp_path / "base.json").read_text())["model_path"] == str(tiny_model_dir)
    assert main(["train", *fast(tiny_model_dir, out, "--max_steps", "1", "--heldout_generate", "0")]) == 0
    with caplog.at_level(logging.INFO, logger="ows"):
        assert main(["eval", str(config), "--tasks", TEXT, "--output", str(tmp_path / "run.json")]) == 0
    assert json.loads((tmp_path / "run.json").read_text())["model_path"] == str(out)
    assert f"evaluating the run in {out} (output_dir of {config}), not its base model" in caplog.text
    assert main(["eval", str(config), str(tiny_model_dir), "--tasks", TEXT, "--output", str(tmp_path / "b2.json")]) == 0
    assert json.loads((tmp_path / "b2.json").read_text())["model_path"] == str(tiny_model_dir)  # a model given: as given
