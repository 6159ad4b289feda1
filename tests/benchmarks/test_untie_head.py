"""benchmarks/untie_head.py: a tied model's copy with its own head matrix, the same logits, loadable as is."""

from __future__ import annotations

import shutil

import pytest
import torch
from _scripts import load_script

transformers = pytest.importorskip("transformers")


def _tied_folder(tiny_model_dir, tmp_path):
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    folder = tmp_path / "tied"
    model.save_pretrained(folder)
    for f in tiny_model_dir.iterdir():
        if "token" in f.name or f.name.endswith(".json") and not (folder / f.name).exists():
            shutil.copy(f, folder / f.name)
    return folder, model


def test_untied_copy_has_its_own_head_and_the_same_logits(tiny_model_dir, tmp_path):
    folder, tied = _tied_folder(tiny_model_dir, tmp_path)
    script = load_script("untie_head.py")
    assert script.main(["--model", str(folder), "--output", str(tmp_path / "untied")]) == 0
    untied = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "untied")
    assert untied.config.tie_word_embeddings is False
    head, inputs = untied.get_output_embeddings().weight, untied.get_input_embeddings().weight
    assert head is not inputs and head.data_ptr() != inputs.data_ptr() and torch.equal(head, inputs)
    ids = torch.randint(0, 96, (2, 7), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(untied(ids).logits, tied(ids).logits)
    with torch.no_grad():
        head.add_(1.0)  # the two matrices train apart now
    assert not torch.equal(untied.get_output_embeddings().weight, untied.get_input_embeddings().weight)


def test_untie_refuses_a_folder_that_holds_files(tmp_path, capsys):
    (tmp_path / "x").write_text("keep")
    with pytest.raises(SystemExit):
        load_script("untie_head.py").parse_args(["--output", str(tmp_path)])
    assert "exists and is not an empty folder" in capsys.readouterr().err
