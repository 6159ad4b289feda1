"""``ows memory``: table, JSON, config sources, bad input (exit 2, one line) and no torch import."""

import contextlib
import io
import json
import subprocess
import sys

import pytest

from ows.cli import main
from ows.memory.estimate import estimate_memory
from ows.methods import method_names

METHODS = method_names()


def _run(argv, monkeypatch=None):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["memory", *argv])
    return code, out.getvalue(), err.getvalue()


def test_table_has_one_row_per_method_and_the_total_of_the_library():
    code, out, _ = _run(["llama-2-7b", "--dtype", "bfloat16", "--seq-len", "512", "--gradient-checkpointing"])
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("llama-2-7b: llama, bfloat16, batch 1 x 512 tokens, gamma=5, rank=128")
    assert lines[1].split() == ["method", "weights", "grads", "optimizer", "projectors", "activations", "logits", "total"]
    rows = {line.split()[0]: line.split() for line in lines[2:2 + len(METHODS)]}
    assert list(rows) == list(METHODS)
    from ows.model_facts import PRESETS

    expected = estimate_memory(PRESETS["llama-2-7b"], "ows", dtype="bfloat16", gradient_checkpointing=True)
    assert float(rows["ows"][-1]) == pytest.approx(expected.total / 2**30, abs=0.006)
    assert float(rows["ows"][1]) == pytest.approx(12.55, abs=0.01)  # 6.74 B bf16 weights


def test_json_is_one_document_in_bytes(tmp_path):
    config = {"model_type": "mistral", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    code, out, _ = _run([str(path), "--method", "full,ows", "--num-active-layers", "2", "--rank", "8", "--json"])
    assert code == 0
    doc = json.loads(out)
    assert doc["unit"] == "bytes" and doc["model_type"] == "mistral"
    assert [e["method"] for e in doc["estimates"]] == ["full", "ows"]
    expected = estimate_memory(config, "ows", num_active_layers=2, rank=8, max_seq_length=512)
    assert doc["estimates"][1]["total"] == expected.total
    assert doc["estimates"][1]["settings"]["num_active_layers"] == 2


def test_model_folder_is_read_without_weights(tiny_model_dir):
    code, out, _ = _run([str(tiny_model_dir), "--method", "lora", "--json"])
    assert code == 0
    assert json.loads(out)["estimates"][0]["method"] == "lora"


def test_chunked_loss_lowers_the_logits_column():
    _, plain, _ = _run(["smollm2-135m", "--method", "full", "--batch-size", "8", "--json"])
    _, chunked, _ = _run(["smollm2-135m", "--method", "full", "--batch-size", "8", "--chunked-loss", "--json"])
    assert json.loads(chunked)["estimates"][0]["logits"] < json.loads(plain)["estimates"][0]["logits"] / 2


@pytest.mark.parametrize("argv, needle", [
    (["smollm2-135m", "--method", "adam"], "--method 'adam' is invalid"),
    (["smollm2-135m", "--dtype", "int4"], "--dtype 'int4' is invalid"),
    (["smollm2-135m", "--batch-size", "0"], "--batch-size 0 is invalid"),
    (["smollm2-135m", "--num-active-layers", "31"], "--num-active-layers 31 is larger"),
    (["smollm2-135m", "--attention", "flash"], "--attention 'flash' is invalid"),
    (["smollm2-135m", "--seq-len", "abc"], "--seq-len 'abc' is not an integer"),
    (["./no/such/folder"], "does not exist"),
    (["some-org/not-cached-model"], "pass a local model folder, a config.json path"),
])
def test_bad_input_is_one_line_and_exit_2(argv, needle, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = _run(argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("ows memory: error: ")
    assert needle in err


def test_bad_json_file_is_a_usage_error(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    code, _, err = _run([str(path)])
    assert code == 2 and "cannot read" in err and "valid config.json" in err


def test_help_has_a_runnable_example():
    code, out, _ = _run(["--help"])
    assert code == 0 and "ows memory smollm2-135m" in out


def test_memory_command_imports_no_torch():
    code = ("import sys\nfrom ows.cli import main\nassert main(['memory', 'mistral-7b', '--json']) == 0\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_without_a_dtype_memory_assumes_what_ows_train_picks_on_a_bf16_gpu_and_says_so(capsys):
    from ows.cli import main

    assert main(["memory", "llama-3.1-8b", "--methods", "ows", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["dtype"] == "bfloat16" and doc["estimates"][0]["settings"]["dtype"] == "bfloat16"
    assert main(["memory", "llama-3.1-8b", "--methods", "ows"]) == 0
    assert "bfloat16 (auto: the checkpoint's dtype is bfloat16 and this GPU has bfloat16)" in capsys.readouterr().out
    assert main(["memory", "llama-3.1-8b", "--methods", "ows", "--dtype", "float32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] == "float32"
