"""The bad-input matrix: each case is one wrong input to `ows`, the exit code and the words its error must hold.

Used by test_bad_inputs.py (each case is a test) and by scripts/bad_input_table.py (the docs table).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class Case:
    area: str
    what: str
    argv: list[str]
    expect: str
    code: int = 2
    patch: Callable[[], contextlib.AbstractContextManager] | None = field(default=None, repr=False)


def _jsonl(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _disk_full() -> contextlib.AbstractContextManager:
    """Make writing safetensors files fail as on a full disk."""
    from unittest import mock

    import transformers.modeling_utils

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    return mock.patch.object(transformers.modeling_utils, "safe_save_file", full)


def cases(model: Path, tmp: Path) -> list[Case]:
    """All cases; files they need are written under ``tmp``."""
    good = _jsonl(tmp / "good.jsonl", [{"prompt": f"{a} + 1 =", "completion": f" {a + 1}"} for a in range(16)])
    out = str(tmp / "out")
    base = ["--model", str(model), "--dataset", good, "--output_dir", out, "--max_steps", "2",
            "--per_device_train_batch_size", "4", "--num_active_layers", "2", "--rank", "4",
            "--calibration_samples", "2", "--calibration_seq_len", "32", "--report_to", "none",
            "--save_strategy", "no", "--heldout_generate", "0"]

    def train(*extra: str, drop: tuple[str, ...] = ()) -> list[str]:
        args = list(base)
        for flag in drop:
            i = args.index(flag)
            del args[i:i + 2]
        return ["train", *args, *extra]

    def write(name: str, text: str | bytes) -> str:
        path = tmp / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return str(path)

    profile7 = write("profile7.json", json.dumps({"ratios": [0.01] * 7}))
    no_config = tmp / "no_config"
    no_config.mkdir(exist_ok=True)
    no_tokenizer = tmp / "no_tokenizer"
    no_tokenizer.mkdir(exist_ok=True)
    (no_tokenizer / "config.json").write_text((model / "config.json").read_text())
    other_ckpt = tmp / "other" / "checkpoint-4"
    other_ckpt.mkdir(parents=True, exist_ok=True)
    (other_ckpt / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    (other_ckpt / "ows_complete.json").write_text(json.dumps({"step": 4, "run": {}}))
    other_run = tmp / "other_run" / "checkpoint-4"
    other_run.mkdir(parents=True, exist_ok=True)
    (other_run / "config.json").write_text((model / "config.json").read_text())
    (other_run / "ows_complete.json").write_text(json.dumps({"step": 4, "run": {"method": "ows", "rank": 64}}))
    torn = tmp / "torn" / "checkpoint-2"
    torn.mkdir(parents=True, exist_ok=True)
    different = tmp / "different"
    different.mkdir(exist_ok=True)
    (different / "ows_run.json").write_text(json.dumps({"settings": {"learning_rate": 1.0}}))
    (different / "results.json").write_text("{}")  # a run that trained (an attempt that never did is replaced)
    new = _reliability_two_cases(model, tmp, base, train, write)
    from bad_inputs_three import cases_three

    new += cases_three(model, tmp, train, write, _jsonl, Case)
    return [
        Case("config", "YAML with an unknown key", ["train", write("k.yaml", "gamma: 5\n"), *base[:2]], "unknown field 'gamma'"),
        Case("config", "YAML value of the wrong type", ["train", write("t.yaml", "num_active_layers: five\n")], "num_active_layers='five'"),
        Case("config", "YAML that is a list, not a mapping", ["train", write("l.yaml", "- a\n- b\n")], "must be a mapping"),
        Case("config", "invalid YAML syntax", ["train", write("s.yaml", "a: [1,\n")], "not valid YAML"),
        Case("config", "config file that does not exist", ["train", str(tmp / "nope.yaml")], "does not exist"),
        Case("cli", "flag value of the wrong type", train("--max_steps", "many"), "--max_steps 'many'"),
        Case("cli", "unknown flag", train("--gamma", "5"), "unrecognized arguments: --gamma"),
        Case("cli", "unknown command", ["trian"], "unknown command 'trian'"),
        Case("config", "num_active_layers = 0", train("--num_active_layers", "0"), "num_active_layers=0"),
        Case("config", "num_active_layers larger than the model", train("--num_active_layers", "9"), "num_active_layers=9"),
        Case("config", "unknown proj_type", train("--proj_type", "full"), "proj_type='full'"),
        Case("config", "strategy 'weights' without weights", train("--sampling_strategy", "weights"), "sampling_weights"),
        Case("config", "sampling_weights of the wrong length", train("--sampling_strategy", "weights", "--sampling_weights", "1,2"), "sampling_weights has 2 values"),
        Case("config", "unknown method", train("--method", "dora"), "method='dora'"),
        Case("config", "eval_split_ratio outside [0, 1)", train("--eval_split_ratio", "1.5"), "eval_split_ratio=1.5"),
        Case("config", "max_seq_length longer than the model", train("--max_seq_length", "100000"), "max_seq_length=100000"),
        Case("config", "held-out seeds overlapping the training seeds", train("--dataset", "reasoning-gym:chain_sum", "--heldout_seed", "5", drop=("--dataset",)), "heldout_seed=5"),
        Case("data", "dataset file that does not exist", train("--dataset", str(tmp / "nope.jsonl"), drop=("--dataset",)), "nope.jsonl"),
        Case("data", "unsupported file type", train("--dataset", write("d.txt", "hello"), drop=("--dataset",)), "unsupported extension"),
        Case("data", "empty dataset", train("--dataset", write("empty.jsonl", ""), drop=("--dataset",)), "has no rows"),
        Case("data", "rows missing a required column", train("--dataset", _jsonl(tmp / "m.jsonl", [{"instruction": "x"}]), "--dataset_format", "alpaca", drop=("--dataset",)), "output"),
        Case("data", "malformed JSON line", train("--dataset", write("bad.jsonl", '{"prompt": "a", "completion": "b"}\n{"prompt": \n'), drop=("--dataset",)), "could not be read"),
        Case("data", "non-UTF-8 text", train("--dataset", write("latin.jsonl", '{"text": "caf\xe9"}\n'.encode("latin-1")), drop=("--dataset",)), "latin.jsonl"),
        Case("data", "unknown dataset_format", train("--dataset_format", "sharegpt"), "dataset_format"),
        Case("data", "columns that match no format", train("--dataset", _jsonl(tmp / "q.jsonl", [{"question": "q", "answer": "a"}]), drop=("--dataset",)), "question"),
        Case("data", "every example truncated to nothing", train("--max_seq_length", "2"), "max_seq_length"),
        Case("data", "unknown reasoning-gym task", train("--dataset", "reasoning-gym:no_such_task", drop=("--dataset",)), "no_such_task"),
        Case("model", "model folder that does not exist", train("--model", str(tmp / "missing"), drop=("--model",)), "does not exist"),
        Case("model", "folder without config.json", train("--model", str(no_config), drop=("--model",)), "without config.json"),
        Case("model", "model folder without a tokenizer", train("--model", str(no_tokenizer), drop=("--model",)), "tokenizer"),
        Case("profile", "profile of a model with other layers", train("--sampling_strategy", "owl", "--profile", profile7), "has 7 layers"),
        Case("profile", "profile file that does not exist", train("--sampling_strategy", "owl", "--profile", str(tmp / "p.json")), "does not exist"),
        Case("profile", "profile that is not valid JSON", train("--sampling_strategy", "owl", "--profile", write("p_bad.json", "{oops")), "not valid JSON"),
        Case("profile", "profile with negative ratios", train("--sampling_strategy", "owl", "--profile", write("p_neg.json", json.dumps({"ratios": [-1, 1, 1, 1]}))), "negative"),
        Case("output", "output_dir holding a different run", train("--output_dir", str(different), drop=("--output_dir",)), "holds a different run"),
        Case("output", "output_dir that is a file", train("--output_dir", write("file_out", "x"), drop=("--output_dir",)), "is a file"),
        Case("checkpoint", "resume from a checkpoint that does not exist", train("--resume_from_checkpoint", str(tmp / "checkpoint-7")), "does not exist"),
        Case("checkpoint", "resume from a checkpoint of another model", train("--resume_from_checkpoint", str(other_ckpt)), "another model"),
        Case("checkpoint", "resume from a checkpoint written with another config", train("--resume_from_checkpoint", str(other_run)), "rank=64"),
        Case("checkpoint", "resume from a half-written checkpoint", train("--resume_from_checkpoint", str(torn)), "incomplete"),
        Case("analyze", "ows analyze with --num-samples 0", ["analyze", str(model), "--num-samples", "0", "--output-dir", str(tmp / "a")], "--num-samples"),
        Case("output", "disk full while saving the model (simulated)", train("--output_dir", str(tmp / "full"), drop=("--output_dir",)), "No space left", code=1, patch=_disk_full),
        *new,
    ]


class _Hostile:
    """Unpickling this would create a file: a checkpoint holding it must be refused, never loaded."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _checkpoint(folder: Path, model: Path, trainer_state: str = '{"global_step": 2, "max_steps": 2}') -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text((model / "config.json").read_text())
    (folder / "trainer_state.json").write_text(trainer_state)
    (folder / "ows_complete.json").write_text(json.dumps({"step": 2, "run": {}}))
    return folder


def _reliability_two_cases(model: Path, tmp: Path, base: list[str], train: Callable, write: Callable) -> list[Case]:
    """The cases of the second reliability round: every value checked before any work, clear messages."""
    import torch

    zero_profile = write("p_zero.json", json.dumps({"ratios": [0.0] * 4, "model_name": model.name}))
    one_profile = write("p_one.json", json.dumps({"ratios": [0.1, 0.0, 0.0, 0.0], "model_name": model.name}))
    other_profile = write("p_other.json", json.dumps({"ratios": [0.1] * 4, "model_name": "Llama-2-7b-hf"}))
    truncated = tmp / "truncated_config"
    truncated.mkdir(exist_ok=True)
    (truncated / "config.json").write_text((model / "config.json").read_text()[:40])
    distilbert = tmp / "distilbert"
    distilbert.mkdir(exist_ok=True)
    (distilbert / "config.json").write_text(json.dumps({"model_type": "distilbert", "vocab_size": 100, "dim": 32,
                                                        "n_layers": 2, "n_heads": 2, "hidden_dim": 64}))
    torn_state = _checkpoint(tmp / "torn_state" / "checkpoint-2", model, '{"global_step": 2, "max_st')
    hostile = _checkpoint(tmp / "hostile" / "checkpoint-2", model)
    torch.save(_Hostile(str(tmp / "pwned")), hostile / "optimizer.pt")
    torch.save({"step": torch.tensor(1)}, hostile / "scheduler.pt")
    not_ckpt = tmp / "some_folder"
    not_ckpt.mkdir(exist_ok=True)
    chat = lambda rows: _jsonl(tmp / f"chat{len(rows)}_{rows[0]['messages'][0]['role']}.jsonl", rows)  # noqa: E731
    human = chat([{"messages": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "yo"}]}])
    parts = chat([{"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                                {"role": "assistant", "content": "yo"}]}])
    no_reply = chat([{"messages": [{"role": "user", "content": "hi"}]}] * 2)
    data = ("--dataset",)

    pref = _jsonl(tmp / "pref.jsonl", [{"prompt": f"{a} + 1 =", "chosen": f" {a + 1}", "rejected": f" {a + 2}"}
                                       for a in range(16)])
    def yaml_case(name: str, text: str, drop: tuple[str, ...] = ()) -> list[str]:
        return ["train", write(name, text), *train(drop=drop)[1:]]

    return [
        Case("config", "negative learning rate", train("--learning_rate", "-1"), "learning_rate=-1.0 is invalid"),
        Case("config", "NaN learning rate", train("--learning_rate", "nan"), "--learning_rate 'nan' is not a number"),
        Case("config", "seed of 2**32", train("--seed", str(2**32)), "seed=4294967296 is invalid"),
        Case("config", "batch size 0", train("--per_device_train_batch_size", "0"), "per_device_train_batch_size=0"),
        Case("config", "batch size 1e23 in YAML", yaml_case("big.yaml", f"per_device_train_batch_size: {10**23}\n", drop=("--per_device_train_batch_size",)), "per_device_train_batch_size=100000000000000000000000 is invalid"),
        Case("config", "gradient_accumulation_steps 0", train("--gradient_accumulation_steps", "0"), "gradient_accumulation_steps=0 is invalid"),
        Case("config", "lr_scheduler_kwargs: 5", yaml_case("kw.yaml", "lr_scheduler_kwargs: 5\n"), "lr_scheduler_kwargs='5' is invalid"),
        Case("config", "max_steps 0", train("--max_steps", "0"), "max_steps=0 is invalid"),
        Case("config", "save_steps 0", train("--save_steps", "0", "--save_strategy", "steps"), "save_steps=0.0 is invalid"),
        Case("config", "learning_rate that is no number in YAML", yaml_case("lr.yaml", "learning_rate: fast\n"), "learning_rate='fast' is not a finite number"),
        Case("config", "a YAML key given twice", yaml_case("dup.yaml", "rank: 4\nrank: 8\n", drop=("--rank",)), "key 'rank' appears twice"),
        Case("config", "a bare no for a text field in YAML", yaml_case("no.yaml", "save_strategy: no\n", drop=("--save_strategy",)), "write the word in quotes"),
        Case("cli", "a flag prefix (--num_active 3)", train("--num_active", "3"), "unrecognized arguments: --num_active"),
        Case("config", "sampling weights all zero", train("--sampling_strategy", "weights", "--sampling_weights", "0,0,0,0"), "sampling_weights are all zero"),
        Case("config", "too few non-zero sampling weights", train("--sampling_strategy", "weights", "--sampling_weights", "1,0,0,0", "--sampling_granularity", "layer"), "only 1 layers have a non-zero probability"),
        Case("profile", "profile ratios all zero", train("--sampling_strategy", "owl", "--profile", zero_profile), "ratios are all zero"),
        Case("profile", "too few non-zero profile ratios", train("--sampling_strategy", "owl", "--profile", one_profile, "--sampling_granularity", "layer"), "only 1 layers have a non-zero probability"),
        Case("profile", "profile of another model with the same layer count", train("--sampling_strategy", "owl", "--profile", other_profile), "was measured on 'Llama-2-7b-hf'"),
        Case("model", "truncated config.json", train("--model", str(truncated), drop=("--model",)), "config.json cannot be read"),
        Case("model", "a hub id that cannot be fetched", train("--model", "ows-no-such-org/no-such-model", drop=("--model",)), "is not a local path and its config could not be fetched"),
        Case("model", "a model that is not a causal LM (DistilBERT)", train("--model", str(distilbert), drop=("--model",)), "is a 'distilbert' model, which has no causal-LM head"),
        Case("output", "output_dir whose parent is a file", train("--output_dir", str(Path(write("parent_file", "x")) / "out"), drop=("--output_dir",)), "cannot be created"),
        Case("checkpoint", "resume from a folder that is not a checkpoint", train("--resume_from_checkpoint", str(not_ckpt)), "is not a checkpoint folder"),
        Case("checkpoint", "checkpoint with a truncated trainer_state.json", train("--resume_from_checkpoint", str(torn_state)), "trainer_state.json is not valid JSON"),
        Case("checkpoint", "checkpoint holding a pickled object", train("--resume_from_checkpoint", str(hostile)), "optimizer.pt holds objects other than tensors: it is not a tensor-only checkpoint file and is refused"),
        Case("data", "chat role 'human'", train("--dataset", human, drop=data), "has role 'human'"),
        Case("data", "chat content given as a list of parts", train("--dataset", parts, drop=data), "has list content"),
        Case("data", "chat rows without an assistant turn", train("--dataset", no_reply, drop=data), "no row has an assistant turn"),
        Case("dpo", "dpo_beta 0", train("--task", "dpo", "--dataset", pref, "--dpo_beta", "0", drop=data), "dpo_beta=0.0 is invalid"),
        Case("dpo", "task dpo on rows without chosen and rejected", train("--task", "dpo"), "is missing field 'chosen'"),
        Case("output", "save_delta with an adapter method", train("--save_delta", "true", "--method", "lora"), "save_delta=true needs a method that trains the model's own weights"),
        Case("logging", "report_to a tracker that is not installed", train("--report_to", "comet_ml", drop=("--report_to",)), "needs the comet_ml package, which is not installed"),
        Case("memory", "frozen_quantization nf8", train("--frozen_quantization", "nf8"), "frozen_quantization='nf8' is invalid: use one of none, nf4, int8"),
        Case("memory", "max_memory below any plan", train("--max_memory", "1MiB", "--memory_headroom", "0"), "nothing fits for method='ows'"),
        Case("memory", "memory_headroom as large as max_memory", train("--max_memory", "1GiB"), "memory_headroom='1GiB' leaves nothing of max_memory='1GiB'"),
        Case("memory", "max_memory that is not a size", train("--max_memory", "lots"), "max_memory='lots' is invalid"),
        Case("eval", "mt-bench without its questions file", ["eval", str(model), "--tasks", "mt-bench"], "needs the questions file"),
        Case("export", "export from a folder that is not a run", ["export", "lora", str(tmp / "no_run"), str(tmp / "lora_out")], "is not an ows train output folder"),
    ]


def run_case(case: Case) -> tuple[int, list[str], str]:
    """Run one case in-process: (exit code, stderr lines, stdout)."""
    from ows.cli import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), (case.patch() if case.patch else contextlib.nullcontext()):
        code = main(list(case.argv))
    return code, [line for line in err.getvalue().splitlines() if re.match(r"^ows( \w+)?: ", line)], out.getvalue()
