"""benchmarks/gpu_memory.py on CPU with a tiny config (every method in its own process) and its ratio arithmetic.

On CPU the peak-memory column is each child's peak RSS (``ows.memory.peak_rss_bytes``); the tracked
column is parameters + gradients + optimizer state.
"""

from __future__ import annotations

import json

import pytest
from _scripts import load_script

SMALL = dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=4, vocab_size=512, max_position_embeddings=128, tie_word_embeddings=False)


def _load():
    return load_script("gpu_memory.py")


def test_ratios_and_table_from_records():
    gm = _load()
    rows = {"full": {"peak_gib": 4.0, "tokens_per_s": 100.0, "status": "ok"},
            "lora": {"peak_gib": 2.0, "tokens_per_s": 200.0, "status": "ok"},
            "ows": {"peak_gib": 1.0, "tokens_per_s": 150.0, "status": "ok"}}
    gm.add_ratios(rows)
    assert rows["ows"]["peak_gib_x_full"] == pytest.approx(0.25) and rows["ows"]["peak_gib_x_lora"] == pytest.approx(0.5)
    assert rows["ows"]["tokens_per_s_x_lora"] == pytest.approx(0.75)
    assert rows["ows"]["reserved_gib_x_full"] is None  # missing figures give no ratio
    table = gm.markdown(rows, ["Command: `x`"], cuda=True)
    row = next(line for line in table.splitlines() if line.startswith("| OWS"))
    assert "1.00 (0.25× full, 0.50× LoRA)" in row and "150 (1.50× full, 0.75× LoRA)" in row
    assert "peak CUDA allocated GiB" in table and "max_memory_allocated" in table


def test_bad_options_name_the_value(capsys):
    gm = _load()
    with pytest.raises(SystemExit):
        gm.parse_args(["--methods", "full,adam"])
    assert "--methods has 'adam'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--gamma 9 is larger than the model's 8 layers"):
        gm.model_values(gm.parse_args(["--scale", "tiny", "--gamma", "9"]))


@pytest.mark.slow  # about 35 s: every method in its own process
def test_runs_every_method_on_cpu(tmp_path):
    pytest.importorskip("peft")
    gm = _load()
    config = tmp_path / "config.json"
    config.write_text(json.dumps(SMALL))
    out = tmp_path / "out"
    argv = ["--device", "cpu", "--config", str(config), "--dtype", "float32", "--gamma", "2", "--rank", "4",
            "--warmup", "1", "--steps", "2", "--seq-len", "32", "--interval", "2", "--budget", "900", "--out", str(out)]
    assert gm.main(argv) == 0
    table = (out / "table.md").read_text()
    assert table.startswith("Command: `python benchmarks/gpu_memory.py --device cpu")
    result = json.loads((out / "results.json").read_text())
    from ows.methods import get_method

    assert list(result["rows"]) == [m for m in gm.PRODUCT_METHODS if get_method(m).base_quantization is None]
    assert list(result["rows"])[0] == "full" and "ows" in result["rows"] and "qlora" not in result["rows"]
    for method, row in result["rows"].items():
        assert row["status"] == "ok", (method, row["status"])
        assert row["peak_gib"] > 0 and row["tracked_gib"] > 0 and row["tokens_per_s"] > 0
        assert row["reserved_gib"] is None  # CPU: no CUDA allocator
        assert row["peak_gib_x_full"] == pytest.approx(row["peak_gib"] / result["rows"]["full"]["peak_gib"])
        assert row["tracked_gib_x_lora"] == pytest.approx(row["tracked_gib"] / result["rows"]["lora"]["tracked_gib"])
        assert f"| {gm.LABELS[method]} |" in table
    records = result["records"]
    assert all(r["steps_done"] == 3 for r in records.values())
    # Sampling methods train 2 of 4 layers, so they hold fewer gradients than full FT; GaLore ran its SVDs.
    assert records["lisa"]["peak_grad_bytes"] < records["full"]["peak_grad_bytes"]
    assert records["galore"]["svd_calls"] > 0 and records["full"]["svd_calls"] == 0
    assert records["galore"]["peak_state_bytes"] < records["full"]["peak_state_bytes"]
