"""Every file and folder that any ows command writes has the usual mode under the user's umask (0644 / 0755 under
umask 022): train with checkpoints and its delta, export delta, export lora, merge, eval and analyze."""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
from pathlib import Path

import pytest

pytest.importorskip("transformers")
from ows.cli import main  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "eval"


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _ok(argv: list[str]) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(argv)
    assert code == 0, (argv[:2], out.getvalue()[-2000:])


def test_every_output_of_every_command_has_the_usual_mode(tiny_model_dir, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{a} + 1 =", "completion": f" {a + 1}"}) + "\n" for a in range(16)))
    run = tmp_path / "run"
    _ok(["train", "--model", str(tiny_model_dir), "--dataset", str(data), "--output_dir", str(run), "--max_steps", "2",
         "--per_device_train_batch_size", "4", "--num_active_layers", "2", "--rank", "4", "--save_strategy", "steps",
         "--save_steps", "1", "--calibration_samples", "2", "--calibration_seq_len", "32", "--report_to", "none",
         "--heldout_generate", "0", "--save_delta", "true"])
    _ok(["export", "delta", str(run), str(tmp_path / "delta"), "--alpha", "0.5"])
    _ok(["export", "lora", str(run), str(tmp_path / "lora"), "--rank", "2"])
    _ok(["merge", str(tiny_model_dir), str(run / "delta"), str(tmp_path / "merged")])
    (tmp_path / "eval").mkdir()
    _ok(["eval", str(tiny_model_dir), "--tasks", f"perplexity:{FIXTURES / 'text_tiny.txt'}", "--limit", "2",
         "--seq-len", "32", "--output", str(tmp_path / "eval" / "results.json")])
    _ok(["analyze", str(tiny_model_dir), "--num-samples", "2", "--seq-len", "32", "--batch-size", "2", "--output-dir",
         str(tmp_path / "analyze")])
    outputs = ["run", "delta", "lora", "merged", "eval", "analyze"]
    assert {"checkpoint-1", "checkpoint-2", "delta", "model.safetensors"} <= {p.name for p in (tmp_path / "run").iterdir()}
    usual = {False: 0o666 & ~_umask(), True: 0o777 & ~_umask()}
    wrong = []
    for name in outputs:
        root = tmp_path / name
        for path in [root, *root.rglob("*")]:
            if path.is_symlink():
                continue
            if stat.S_IMODE(path.stat().st_mode) != usual[path.is_dir()]:
                wrong.append(f"{path.relative_to(tmp_path)} {oct(stat.S_IMODE(path.stat().st_mode))}")
    assert not wrong, wrong
    assert len([p for name in outputs for p in (tmp_path / name).rglob("*.safetensors")]) >= 6
