"""Every case of the bad-input matrix gives its exit code and one clear line, and writes nothing."""

import pytest

pytest.importorskip("transformers")
from bad_inputs import cases, run_case  # noqa: E402

COUNT = 111


def test_matrix_covers_every_area(tiny_model_dir, tmp_path):
    all_cases = cases(tiny_model_dir, tmp_path)
    assert len(all_cases) == COUNT >= 25
    assert {c.area for c in all_cases} >= {"config", "cli", "data", "model", "profile", "output", "checkpoint"}
    assert len({c.what for c in all_cases}) == COUNT  # no case listed twice


@pytest.mark.parametrize("index", range(COUNT))
def test_bad_input(tiny_model_dir, tmp_path, index):
    all_cases = cases(tiny_model_dir, tmp_path)
    assert len(all_cases) == COUNT
    case = all_cases[index]
    code, lines, _ = run_case(case)
    assert code == case.code, (case.what, lines)
    assert len(lines) == 1, (case.what, lines)
    assert case.expect in lines[0], (case.what, lines[0])
    assert not (tmp_path / "out").exists()  # nothing written for the default output folder
    if case.code == 1:  # failed while saving: no half-written model, no staging folder left
        folder = tmp_path / "full"
        assert not (folder / "model.safetensors").exists()
        assert not list(folder.glob(".ows-final-*"))
