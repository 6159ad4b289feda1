import contextlib
import io
import json
import logging

import pytest

pytest.importorskip("transformers")

from ows import OutlierProfile  # noqa: E402
from ows.cli import main  # noqa: E402

SMALL = ["--num-samples", "4", "--seq-len", "32", "--batch-size", "2"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def analyzed(tiny_model_dir, tmp_path_factory):
    """One real run shared by the checks of its outputs: (exit code, stdout, output dir)."""
    out = tmp_path_factory.mktemp("analyze") / "out"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["analyze", str(tiny_model_dir), *SMALL, "--output-dir", str(out)])
    return code, buffer.getvalue(), out


def test_table_has_a_line_per_layer(analyzed):
    code, stdout, _ = analyzed
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0].split() == ["layer", "ratio(%)", "probability", "bar"]
    rows = [line.split() for line in lines[1:5]]
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3]
    assert abs(sum(float(r[2]) for r in rows) - 1.0) < 1e-3
    assert lines[5].startswith("mean ratio ") and "max layer" in lines[5] and "min layer" in lines[5]


def test_profile_json_and_png_are_written(analyzed, tiny_model_dir):
    _, _, out = analyzed
    profile = OutlierProfile.from_json(out / "profile.json")
    assert profile.num_layers == 4
    assert profile.num_tokens == 4 * 32
    assert profile.threshold == 5.0
    assert profile.extra["num_samples"] == 4 and profile.extra["seq_len"] == 32
    assert profile.extra["calibration"].startswith("builtin")
    assert profile.model_name == tiny_model_dir.name
    assert (out / "profile.png").read_bytes()[:8] == PNG_MAGIC


def test_json_output_is_one_document(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["analyze", str(tiny_model_dir), *SMALL, "--output-dir", str(out), "--json",
                 "--strategy", "uniform", "--seed", "3"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["ratios"]) == 4 and doc["probabilities"] == [0.25] * 4
    assert doc["strategy"] == "uniform" and doc["extra"]["seed"] == 3
    assert doc["files"]["profile_json"] == str(out / "profile.json")
    assert (out / "profile.png").is_file()


def test_default_output_dir_and_calibration_file(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "cal.jsonl"
    data.write_text("\n".join(json.dumps({"text": "The capital of France is Paris. " * 20}) for _ in range(5)))
    code = main(["analyze", str(tiny_model_dir), *SMALL, "--calibration", str(data)])
    assert code == 0
    out = tmp_path / f"ows-analyze-{tiny_model_dir.name}"
    profile = OutlierProfile.from_json(out / "profile.json")
    assert profile.extra["calibration"] == str(data)
    assert "wrote" in capsys.readouterr().out


def test_help_exits_zero(capsys):
    assert main(["analyze", "--help"]) == 0
    text = capsys.readouterr().out
    assert "ows analyze" in text and "--calibration" in text and "examples:" in text


def _short_text(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("hi there\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("case, args, expected", [
    ("missing model", ["{tmp}/no-such-model"], "does not exist"),
    ("missing calibration", ["{model}", "--calibration", "{tmp}/nope.txt"], "--calibration"),
    ("zero samples", ["{model}", "--num-samples", "0"], "--num-samples 0"),
    ("negative threshold", ["{model}", "--threshold", "-1"], "--threshold -1.0"),
    ("not a number", ["{model}", "--seq-len", "abc"], "--seq-len"),
    ("unknown strategy", ["{model}", "--strategy", "weights"], "--strategy"),
    ("text too short", ["{model}", "--calibration", "{short}", "--seq-len", "64"], "--seq-len 64"),
])
def test_bad_input_exits_2_with_one_line(case, args, expected, tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OWS_LOG_LEVEL", "WARNING")
    out = tmp_path / "out"
    fill = dict(tmp=tmp_path, model=tiny_model_dir, short=_short_text(tmp_path))
    argv = [a.format(**fill) for a in args]
    assert main(["analyze", *argv, "--output-dir", str(out)]) == 2, case
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ows analyze: error:"), captured.err
    assert expected in lines[0]
    assert not out.exists()
