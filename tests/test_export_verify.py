"""A delta is verified before a merge writes anything: its own hash, its header, its tensors against the base; links
are never followed; --alpha interpolates in weight space; every file gets the usual mode."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest
import torch

pytest.importorskip("safetensors")
from ows.export import (DELTA_FILE, Weights, compute_delta, extract_lora, file_sha256, merge_delta,  # noqa: E402
                        write_delta)
from test_export import _same_tensors, _train_layer_one, _tuned_copy  # noqa: E402


@pytest.fixture
def made(tiny_model_dir, tmp_path):
    """(tuned folder, delta folder) of a fine-tune that changed layer 1 and the final norm."""
    torch.manual_seed(0)
    tuned = _tuned_copy(tiny_model_dir, tmp_path / "tuned", _train_layer_one)
    return tuned, write_delta(compute_delta(tiny_model_dir, tuned), tiny_model_dir, "tiny", tmp_path / "delta",
                              str(tuned))


def _info(delta):
    return json.loads((delta / "delta.json").read_text())


def _edit_info(delta, **changes):
    (delta / "delta.json").write_text(json.dumps({**_info(delta), **changes}))


def _rewrite(delta, change, rehash=True, relist=False):
    """Rewrite delta.safetensors with ``change(tensors)`` applied, keeping its header; optionally fix the recorded
    hash (and tensor list) so that only the checks against the base can catch it."""
    from safetensors.torch import save_file

    weights = Weights(delta, [delta / DELTA_FILE])
    tensors = {name: weights.get(name) for name in weights.names}
    change(tensors)
    save_file(tensors, str(delta / DELTA_FILE), metadata=weights.metadata)
    info = _info(delta)
    if rehash:
        info["delta_sha256"] = file_sha256(delta / DELTA_FILE)
    if relist:
        info["tensors"] = sorted(tensors)
    (delta / "delta.json").write_text(json.dumps(info))


NORM = "model.norm.weight"
Q1 = "model.layers.1.self_attn.q_proj.weight"
TAMPERING = {
    "a tensor listed but missing": (lambda d: _edit_info(d, tensors=sorted(_info(d)["tensors"] + ["lm_head.weight"])),
                                    "'lm_head.weight' is listed but not in delta.safetensors"),
    "a changed value": (lambda d: _rewrite(d, lambda t: t[NORM].add_(1), rehash=False),
                        "delta.safetensors does not match the SHA-256 recorded in delta.json"),
    "an extra tensor": (lambda d: _rewrite(d, lambda t: t.update({"extra.weight": torch.ones(2)})),
                        "'extra.weight' is in delta.safetensors but not listed"),
    "an extra tensor, listed": (lambda d: _rewrite(d, lambda t: t.update({"extra.weight": torch.ones(2)}), relist=True),
                                "tensor 'extra.weight' is not a tensor of the base model"),
    "a wrong shape": (lambda d: _rewrite(d, lambda t: t.update({NORM: torch.ones(7)})),
                      "tensor 'model.norm.weight' has shape (7,), the base's is (32,)"),
    "an fp16 tensor": (lambda d: _rewrite(d, lambda t: t.update({Q1: t[Q1].half()})),
                       "is float16, the run saved float32"),
    "dtype float16 in delta.json": (lambda d: _edit_info(d, dtype="float16"),
                                    "delta.json says dtype=float16 but delta.safetensors was written with None"),
    "'dropped' listing every tensor": (lambda d: _edit_info(d, dropped=Weights(d.parent / "tuned").names),
                                       "delta.json says dropped="),
    "a truncated tensor file": (lambda d: (d / DELTA_FILE).write_bytes((d / DELTA_FILE).read_bytes()[:100]),
                                "delta.safetensors does not match the SHA-256"),
    "a truncated tensor file, rehashed": (lambda d: ((d / DELTA_FILE).write_bytes((d / DELTA_FILE).read_bytes()[:100]),
                                                     _edit_info(d, delta_sha256=file_sha256(d / DELTA_FILE))),
                                          "delta.safetensors' cannot be read as safetensors"),
    "no base_sha256": (lambda d: (d / "delta.json").write_text(json.dumps(
        {k: v for k, v in _info(d).items() if k != "base_sha256"})), "delta.json has no 'base_sha256'"),
    "dtype nn": (lambda d: _edit_info(d, dtype="nn"), "delta.json has an invalid 'dtype' ('nn')"),
    "a delta of the first format": (lambda d: _edit_info(d, format="ows-delta/1"), "was written by an older ows"),
    "a linked config.json": (lambda d: ((d / "config.json").unlink(), os.symlink("/etc/hostname", d / "config.json")),
                             "config.json is a symbolic link (to '/etc/hostname')"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_a_tampered_delta_is_refused_in_one_line_before_anything_is_written(made, tiny_model_dir, tmp_path, case):
    from ows.cli import main

    tamper, message = TAMPERING[case]
    tamper(made[1])
    with pytest.raises((ValueError, FileNotFoundError)) as caught:
        merge_delta(tiny_model_dir, made[1], tmp_path / "merged")
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "merged").exists()
    assert main(["merge", str(tiny_model_dir), str(made[1]), str(tmp_path / "merged")]) == 2
    assert not (tmp_path / "merged").exists() and not list(tmp_path.glob(".merged*"))


def test_an_untouched_delta_merges_bit_for_bit_and_every_file_has_the_usual_mode(made, tiny_model_dir, tmp_path):
    merged = merge_delta(tiny_model_dir, made[1], tmp_path / "merged")
    _same_tensors(merged, made[0])
    usual = 0o666 & ~_umask()
    for folder in (made[1], merged):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~_umask()
        for path in folder.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == usual, path


def test_out_under_a_file_is_refused_and_a_linked_run_file_is_not_copied(made, tiny_model_dir, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="cannot be created: .*file' is a file"):
        merge_delta(tiny_model_dir, made[1], tmp_path / "file" / "merged")
    run = made[0]
    (run / "config.json").unlink()
    os.symlink("/etc/hostname", run / "config.json")
    with pytest.raises(ValueError, match="config.json is a symbolic link"):
        write_delta(compute_delta(tiny_model_dir, run), tiny_model_dir, "tiny", tmp_path / "d2", str(run))
    assert not (tmp_path / "d2").exists()


def test_alpha_interpolates_each_changed_tensor_and_one_is_the_fine_tune(made, tiny_model_dir, tmp_path):
    tuned, delta = made
    half = merge_delta(tiny_model_dir, delta, tmp_path / "half", alpha=0.5)
    base, full, mixed = Weights(tiny_model_dir), Weights(tuned), Weights(half)
    for name in base.names:
        expected = base.get(name) + 0.5 * (full.get(name) - base.get(name))
        torch.testing.assert_close(mixed.get(name), expected, rtol=0, atol=1e-7)
        if name not in _info(delta)["tensors"]:
            assert torch.equal(mixed.get(name), base.get(name)), name
    # a delta exported with alpha 0.5 merges (alpha 1) to the same model, and records its alpha
    half_delta = write_delta(compute_delta(tiny_model_dir, tuned, alpha=0.5), tiny_model_dir, "tiny",
                             tmp_path / "half_delta", str(tuned))
    assert _info(half_delta)["alpha"] == 0.5
    _same_tensors(merge_delta(tiny_model_dir, half_delta, tmp_path / "half_again"), half)


@pytest.mark.parametrize("alpha", [0, -0.5, 2.5, float("nan")])
def test_alpha_outside_zero_to_two_is_refused(made, tiny_model_dir, tmp_path, alpha):
    with pytest.raises(ValueError, match=r"--alpha .* is invalid: give a number in \(0, 2\]"):
        merge_delta(tiny_model_dir, made[1], tmp_path / "m", alpha=alpha)
    assert not (tmp_path / "m").exists()


def test_a_failed_lora_write_leaves_nothing_so_the_rerun_works(made, tiny_model_dir, tmp_path, monkeypatch):
    import errno

    import ows.export.lora as lora

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(lora, "save_tensors", full)
        with pytest.raises(OSError):
            extract_lora(tiny_model_dir, made[0], tmp_path / "lora", rank=2)
    assert not (tmp_path / "lora").exists() and not list(tmp_path.glob(".lora*"))
    extract_lora(tiny_model_dir, made[0], tmp_path / "lora", rank=2)
    assert {"adapter_config.json", "adapter_model.safetensors", "lora_report.json"} <= \
        {p.name for p in (tmp_path / "lora").iterdir()}
    for path in (tmp_path / "lora").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask(), path


def _umask():
    current = os.umask(0)
    os.umask(current)
    return current


def test_copying_keeps_no_link_and_a_delta_copy_elsewhere_still_merges(made, tiny_model_dir, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(made[1], moved)
    _same_tensors(merge_delta(tiny_model_dir, moved, tmp_path / "m"), made[0])
