"""The bad-input cases of the third reliability round (issue 25): checkpoints of another setting, the lock file,
the base model's folder, eval outputs, deltas, data values, DPO rows and trackers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Callable
from unittest import mock


def _env(**values: str | None) -> Callable[[], contextlib.AbstractContextManager]:
    """A patch of the environment: a None value removes the variable."""
    def patch() -> contextlib.AbstractContextManager:
        stack = contextlib.ExitStack()
        stack.enter_context(mock.patch.dict(os.environ, {k: v for k, v in values.items() if v is not None}))
        for key in (k for k, v in values.items() if v is None):
            os.environ.pop(key, None)  # restored by patch.dict on exit
        return stack
    return patch


def _closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _delta(model: Path, tmp: Path, name: str) -> Path:
    """A fresh delta folder ``tmp/name`` of a copy of ``model`` whose final norm changed."""
    from safetensors.torch import load_file, save_file

    from ows.export import compute_delta, write_delta

    tuned = tmp / "tuned_for_delta"
    if not tuned.exists():
        shutil.copytree(model, tuned)
        state = load_file(str(tuned / "model.safetensors"))
        state["model.norm.weight"] = state["model.norm.weight"] * 1.5
        save_file(state, str(tuned / "model.safetensors"), metadata={"format": "pt"})
    return write_delta(compute_delta(model, tuned), model, "tiny", tmp / name, str(tuned))


def _edit(delta: Path, change: Callable[[dict], None]) -> str:
    info = json.loads((delta / "delta.json").read_text())
    change(info)
    (delta / "delta.json").write_text(json.dumps(info))
    return str(delta)


def cases_three(model: Path, tmp: Path, train: Callable, write: Callable, jsonl: Callable, case: type) -> list:
    """The cases; ``case`` is the ``Case`` class, ``train(*extra, drop=...)`` the ``ows train`` argv builder."""
    data = ("--dataset",)

    def checkpoint(name: str, run: dict) -> str:
        folder = tmp / name / "checkpoint-2"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text((model / "config.json").read_text())
        (folder / "ows_complete.json").write_text(json.dumps({"step": 2, "run": run}))
        return str(folder)

    def locked(name: str, make: Callable[[Path], None]) -> str:
        folder = tmp / name
        folder.mkdir(exist_ok=True)
        make(folder / ".ows.lock")
        return str(folder)

    victim = write("victim", "keep\n")
    base_copy = tmp / "base_copy"
    if not base_copy.exists():
        shutil.copytree(model, base_copy)
    truncated = _delta(model, tmp, "d_truncated")
    (truncated / "delta.safetensors").write_bytes((truncated / "delta.safetensors").read_bytes()[:60])
    linked = _delta(model, tmp, "d_linked")
    (linked / "config.json").unlink()
    os.symlink("/etc/hostname", linked / "config.json")
    no_hash = _edit(_delta(model, tmp, "d_no_hash"), lambda info: info.pop("base_sha256"))
    dtype_nn = _edit(_delta(model, tmp, "d_dtype"), lambda info: info.update(dtype="nn"))
    good_delta = str(_delta(model, tmp, "d_good"))
    run_results = write("results.json", json.dumps({"method": "ows", "before": {}, "after": {}, "steps": 2}))
    link = tmp / "linked_results.json"
    if not link.is_symlink():
        os.symlink(victim, link)
    compare = write("tasks_x.json", json.dumps({"tasks": {"x": 1}}))
    pc = lambda name, rows: jsonl(tmp / name, rows)  # noqa: E731
    nan = pc("nan.jsonl", [{"prompt": f"{a} + 1 =", "completion": float("nan")} for a in range(4)])
    inf = pc("inf.jsonl", [{"prompt": f"{a} + 1 =", "completion": float("inf")} for a in range(4)])
    listed = pc("listed.jsonl", [{"prompt": ["1"], "completion": " 2"}] * 4)
    empty = pc("empty_text.jsonl", [{"text": ""}] * 8)
    long = pc("long_prompts.jsonl", [{"prompt": "The quick brown fox jumps over the lazy dog. " * 4,
                                      "chosen": " yes", "rejected": " no"}] * 4)
    user_only = pc("chosen_user.jsonl", [{"prompt": [{"role": "user", "content": "hi"}],
                                          "chosen": [{"role": "user", "content": "hello"}],
                                          "rejected": [{"role": "assistant", "content": "no"}]}] * 4)
    empty_reply = pc("chosen_empty.jsonl", [{"prompt": [{"role": "user", "content": "hi"}],
                                             "chosen": [{"role": "assistant", "content": ""}],
                                             "rejected": [{"role": "assistant", "content": "no"}]}] * 4)
    merge_out = str(tmp / "merged")
    port = _closed_port()
    no_login = _env(WANDB_MODE=None, WANDB_API_KEY=None, WANDB_IDENTITY_TOKEN_FILE=None,
                    NETRC=str(tmp / "no_netrc"), HOME=str(tmp))
    return [
        case("checkpoint", "resume with fused_step switched", train("--fused_step", "true", "--resume_from_checkpoint", checkpoint("fused", {"fused_step": False})), "was written with fused_step=False, this run has True"),
        case("checkpoint", "resume with frozen_quantization switched", train("--frozen_quantization", "int8", "--resume_from_checkpoint", checkpoint("frozen", {"frozen_quantization": "none"})), "was written with frozen_quantization='none', this run has 'int8'"),
        case("output", "the lock file a symbolic link", train("--output_dir", locked("lock_link", lambda p: os.symlink(victim, p)), drop=("--output_dir",)), "its lock file .ows.lock is a symbolic link"),
        case("output", "the lock file a folder", train("--output_dir", locked("lock_dir", lambda p: p.mkdir()), drop=("--output_dir",)), "its lock file .ows.lock is a folder"),
        case("output", "the lock file a hard link to another file", train("--output_dir", locked("lock_hard", lambda p: os.link(victim, p)), drop=("--output_dir",)), "is not a plain file of its own"),
        case("output", "output_dir = the base model's folder, with overwrite", train("--model", str(base_copy), "--output_dir", str(base_copy), "--overwrite_output_dir", "true", drop=("--model", "--output_dir")), "holds the base model"),
        case("eval", "--output onto a file ows eval did not write", ["eval", str(model), "--tasks", "perplexity", "--output", run_results], "is not a results file written by ows eval"),
        case("eval", "--output a symbolic link", ["eval", str(model), "--tasks", "perplexity", "--output", str(link)], "is a symbolic link"),
        case("eval", "--compare on a file whose tasks are not entries", ["eval", "--compare", compare, compare], "task 'x' is 1"),
        case("export", "merge a truncated delta", ["merge", str(model), str(truncated), merge_out], "does not match the SHA-256 recorded in delta.json"),
        case("export", "merge a delta.json without base_sha256", ["merge", str(model), no_hash, merge_out], "delta.json has no 'base_sha256'"),
        case("export", "merge a delta.json with dtype nn", ["merge", str(model), dtype_nn, merge_out], "has an invalid 'dtype' ('nn')"),
        case("export", "merge a delta holding a linked config.json", ["merge", str(model), str(linked), merge_out], "config.json is a symbolic link"),
        case("export", "merge into OUT under a file", ["merge", str(model), good_delta, str(Path(victim) / "out")], "cannot be created"),
        case("export", "merge with --alpha 3", ["merge", str(model), good_delta, merge_out, "--alpha", "3"], "--alpha 3.0 is invalid: give a number in (0, 2]"),
        case("export", "a flag the command does not use (merge --rank)", ["merge", str(model), good_delta, merge_out, "--rank", "8"], "--rank is not used by ows merge"),
        case("data", "completion NaN", train("--dataset", nan, drop=data), "field 'completion' is float nan, not text"),
        case("data", "completion Infinity", train("--dataset", inf, drop=data), "field 'completion' is float inf, not text"),
        case("data", "prompt a list", train("--dataset", listed, drop=data), "field 'prompt' is list [\"1\"], not text"),
        case("data", "every text empty", train("--dataset", empty, drop=data), "every row's 'text' is empty"),
        case("dpo", "every prompt longer than max_seq_length", train("--task", "dpo", "--dataset", long, "--max_seq_length", "8", drop=data), "every prompt is at least max_seq_length=8 tokens long"),
        case("dpo", "chosen messages with only a user turn", train("--task", "dpo", "--dataset", user_only, drop=data), "field 'chosen' has no assistant message"),
        case("dpo", "chosen assistant turn empty", train("--task", "dpo", "--dataset", empty_reply, drop=data), "field 'chosen' has an empty assistant message"),
        case("dpo", "dpo_beta set with task sft", train("--dpo_beta", "-5"), "dpo_beta=-5.0 is set but task='sft' does not use it"),
        case("logging", "report_to tensorbord (a typo)", train("--report_to", "tensorbord", drop=("--report_to",)), "did you mean 'tensorboard'?"),
        case("logging", "wandb online without credentials", train("--report_to", "wandb", drop=("--report_to",)), "no W&B credentials were found", patch=no_login),
        case("logging", "WANDB_MODE set to ''", train("--report_to", "wandb", drop=("--report_to",)), "WANDB_MODE='' is invalid", patch=_env(WANDB_MODE="")),
        case("logging", "MLFLOW_TRACKING_URI with an unknown scheme", train("--report_to", "mlflow", drop=("--report_to",)), "has the scheme 'nosuch', which mlflow does not know", patch=_env(MLFLOW_TRACKING_URI="nosuch://x")),
        case("logging", "MLFLOW_TRACKING_URI that does not answer", train("--report_to", "mlflow", drop=("--report_to",)), "does not answer", patch=_env(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}/")),
        case("memory", "max_memory ''", train("--max_memory", ""), "max_memory='' is invalid"),
        case("memory", "max_memory -1GiB", train("--max_memory", "-1GiB"), "max_memory='-1GiB' is invalid: give a positive size"),
    ]
