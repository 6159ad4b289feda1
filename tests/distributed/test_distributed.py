"""OWS on 2 CPU processes (gloo): DDP through the HF Trainer, FSDP2 through ows.distributed.shard_model,
resume across world sizes, mismatched schedules, and `ows train` under torchrun."""

import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
if not torch.distributed.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).parent))
import worker  # noqa: E402
from launch import run_worker, torchrun  # noqa: E402

from ows import LayerSampler  # noqa: E402

LAYER_PARAMS = 9  # q, k, v, o, gate, up, down, two norms in a tiny Llama layer
ACTIVE = worker.CONFIG["num_active_layers"]


def assert_weights_close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=atol, msg=name)


def expected_schedule(steps: int, interval: int = worker.CONFIG["sample_interval"], seed: int = 0) -> list:
    sampler = LayerSampler([1.0] * 6, ACTIVE, interval, seed)
    return [(s, sampler.active_layers(s)) for s in range(0, steps, interval)]


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    """DDP (2 ranks x batch 2, checkpoint at step 3), DDP with accumulation (2 x 1 x 2), 1 process x batch 4."""
    tmp = tmp_path_factory.mktemp("ddp")
    ddp = run_worker({"out": str(tmp / "ddp"), "steps": 6, "batch": 2, "save_steps": 3}, tmp)
    accum = run_worker({"out": str(tmp / "accum"), "steps": 6, "batch": 1, "accum": 2}, tmp)
    single = worker.run({"out": str(tmp / "single"), "steps": 6, "batch": 4, "save_steps": 3})
    return tmp, ddp, accum, single


def test_ddp_ranks_agree_and_match_one_process(ddp_runs):
    _, (r0, r1), _, single = ddp_runs
    assert r0["world_size"] == 2
    assert r0["schedule"] == r1["schedule"] == single["schedule"] == expected_schedule(6)
    assert_weights_close(r0["weights"], r1["weights"], atol=0)  # replicas stay bit-identical
    assert_weights_close(r0["weights"], single["weights"], atol=1e-4)
    torch.testing.assert_close(torch.tensor(r0["losses"]), torch.tensor(single["losses"]), rtol=0, atol=1e-4)
    # GaLore projectors come from the averaged gradient: identical on both ranks
    assert r0["projectors"] and r0["projectors"].keys() == r1["projectors"].keys()
    for name, projector in r0["projectors"].items():
        assert torch.equal(projector, r1["projectors"][name]), name


def test_ddp_reduces_only_the_sampled_layers(ddp_runs):
    _, (r0, _), _, _ = ddp_runs
    active = dict(expected_schedule(6))
    for step, with_grad in r0["grads"]:
        assert tuple(with_grad) == active[step - step % 2]  # frozen layers: no gradient, no reduction
    assert r0["layer_grad_reductions"] == 6 * ACTIVE * LAYER_PARAMS


def test_ddp_gradient_accumulation_matches(ddp_runs):
    _, _, (a0, a1), single = ddp_runs
    assert a0["schedule"] == expected_schedule(6)
    assert_weights_close(a0["weights"], a1["weights"], atol=0)
    assert_weights_close(a0["weights"], single["weights"], atol=1e-4)
    assert a0["layer_grad_reductions"] == 2 * 6 * ACTIVE * LAYER_PARAMS  # reduced on every micro-batch


def test_ddp_with_the_fused_step_matches_one_fused_process(ddp_runs):
    tmp, _, _, _ = ddp_runs
    r0, r1 = run_worker({"out": str(tmp / "fused-ddp"), "steps": 6, "batch": 2, "fused": True}, tmp)
    single = worker.run({"out": str(tmp / "fused-single"), "steps": 6, "batch": 4, "fused": True})
    assert_weights_close(r0["weights"], r1["weights"], atol=0)
    assert_weights_close(r0["weights"], single["weights"], atol=1e-4)
    assert r0["layer_grad_reductions"] == 6 * ACTIVE * LAYER_PARAMS  # each sampled weight averaged in its hook
    assert all(g > 0 for g in r0["grad_norms"]) and r0["grad_norms"] == pytest.approx(single["grad_norms"], rel=1e-3)


def test_resume_across_world_sizes(ddp_runs):
    tmp, (r0, _), _, single = ddp_runs
    # 2 ranks -> 1: the 2-process checkpoint of step 3, continued by one process with the same global batch
    one = worker.run({"out": str(tmp / "resume-1"), "steps": 6, "batch": 4, "model_seed": 7,
                      "resume": str(tmp / "ddp" / "trainer" / "checkpoint-3")})
    assert one["schedule"][0] == (3, expected_schedule(6)[1][1])
    assert_weights_close(one["weights"], r0["weights"], atol=1e-4)
    # 1 -> 2 ranks: the 1-process checkpoint of step 3, continued by two processes
    two = run_worker({"out": str(tmp / "resume-2"), "steps": 6, "batch": 2, "model_seed": 7,
                      "resume": str(tmp / "single" / "trainer" / "checkpoint-3")}, tmp)
    assert_weights_close(two[0]["weights"], two[1]["weights"], atol=0)
    assert_weights_close(two[0]["weights"], single["weights"], atol=1e-4)


def test_fsdp2_trains_frees_frozen_gradients_and_saves(tmp_path):
    from transformers import AutoModelForCausalLM

    r0, r1 = run_worker({"out": str(tmp_path / "fsdp"), "plain": True, "mode": "fsdp", "steps": 8, "save_model": True},
                        tmp_path)
    assert r0["sharded"] and r0["schedule"] == expected_schedule(8)
    # it trains: at ows's defaults (GaLore moments on the tiny embeddings, rank 4) the loss falls ~5 % in 8 steps
    assert sum(r0["losses"][-2:]) < 0.97 * sum(r0["losses"][:2])
    active = dict(expected_schedule(8))
    for step, with_grad in r0["grads"]:
        assert tuple(with_grad) == active[step - step % 2]  # a frozen layer holds no gradient tensor
    assert_weights_close(r0["weights"], r1["weights"], atol=0)
    single = worker.run_plain({"out": str(tmp_path / "single"), "steps": 8, "batch": 4})
    assert_weights_close(r0["weights"], single["weights"], atol=5e-4)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp" / "model").state_dict()
    assert_weights_close({k: loaded[k] for k in r0["weights"]}, r0["weights"], atol=0)


def test_different_schedules_on_ranks_fail_loudly(tmp_path):
    assert LayerSampler([1.0] * 6, ACTIVE, 2, 0).active_layers(0) != LayerSampler([1.0] * 6, ACTIVE, 2, 1).active_layers(0)
    spec = {"out": str(tmp_path / "bad"), "plain": True, "mode": "ddp", "steps": 2, "seed_per_rank": 1}
    (tmp_path / "bad").mkdir()
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    done = torchrun([str(worker.__file__), str(tmp_path / "spec.json")])
    assert done.returncode != 0
    assert "ranks sampled different active layers in period 0: rank 0 has [3, 5], rank 1 has" in done.stderr


@pytest.mark.slow
def test_ows_train_cli_under_torchrun(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is {a} + {b}?", "completion": f" {a + b}"}) + "\n"
                            for a in range(6) for b in range(4)))
    out = tmp_path / "out"
    done = torchrun(["-m", "ows.cli", "train", "--model", str(tiny_model_dir), "--dataset", str(data),
                     "--output_dir", str(out), "--max_steps", "4", "--per_device_train_batch_size", "2",
                     "--num_active_layers", "2", "--sample_interval", "2", "--rank", "4", "--calibration_samples", "2",
                     "--calibration_seq_len", "32", "--logging_steps", "1", "--save_strategy", "steps",
                     "--save_steps", "2", "--report_to", "none", "--max_seq_length", "128", "--heldout_generate", "2",
                     "--eval_split_ratio", "0.2", "--use_cpu", "true", "--ddp_backend", "gloo"])
    assert done.returncode == 0, done.stderr[-5000:]
    assert done.stdout.count("saved the fine-tuned model") == 1  # rank 0 only
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 4 and "heldout_answer_loss" in results["after"]
    schedule = json.loads((out / "schedule.json").read_text())["schedule"]
    assert [s for s, _ in schedule] == [0, 2]
    assert (out / "checkpoint-4" / "ows_complete.json").is_file()
    AutoModelForCausalLM.from_pretrained(out)


def test_before_torch_distributed_starts_the_launchers_rank_decides_who_writes(monkeypatch):
    from ows import distributed

    assert not torch.distributed.is_initialized()
    monkeypatch.setenv("RANK", "1")
    assert distributed.rank() == 1 and not distributed.is_main_process()
    monkeypatch.delenv("RANK")
    assert distributed.rank() == 0 and distributed.is_main_process()


def test_shutdown_destroys_the_group_and_is_a_no_op_without_one(tmp_path):
    from ows import distributed

    distributed.shutdown()  # nothing started: nothing to do, no error
    store = torch.distributed.FileStore(str(tmp_path / "store"), 1)
    torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
    assert torch.distributed.is_initialized()
    distributed.shutdown()
    assert not torch.distributed.is_initialized()
