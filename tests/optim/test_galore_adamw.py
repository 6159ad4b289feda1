import io

import pytest
import torch

from ows import GaLoreAdamW
from ows.optim import compute_projector, project, project_back, projection_side

SHAPES = [(48, 32), (32, 48), (40, 40)]


def make_params(seed=0):
    g = torch.Generator().manual_seed(seed)
    mats = [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in SHAPES]
    bias = torch.nn.Parameter(torch.randn(16, generator=g))
    return mats, bias


def grads_for(step, params):
    g = torch.Generator().manual_seed(1000 + step)
    # low-rank-ish gradients plus noise, like real weight gradients
    out = []
    for p in params:
        if p.dim() == 2:
            a = torch.randn(p.shape[0], 3, generator=g) @ torch.randn(3, p.shape[1], generator=g)
            out.append(a + 0.1 * torch.randn(*p.shape, generator=g))
        else:
            out.append(torch.randn(*p.shape, generator=g))
    return out


def run(optimizer_cls, proj_type, steps=9, **kw):
    mats, bias = make_params()
    groups = [
        {"params": mats, "rank": 8, "update_proj_gap": 4, "scale": 0.25, "proj_type": proj_type},
        {"params": [bias]},
    ]
    opt = optimizer_cls(groups, lr=1e-2, **kw)
    history = []
    for step in range(steps):
        for p, g in zip(mats + [bias], grads_for(step, mats + [bias])):
            p.grad = g
        opt.step()
        history.append([p.detach().clone() for p in mats + [bias]])
    return history


@pytest.mark.parametrize("proj_type", ["std", "reverse_std", "left", "right"])
def test_matches_galore_reference_update_for_update(proj_type):
    reference = pytest.importorskip("galore_torch")
    kw = dict(betas=(0.9, 0.99), eps=1e-6, weight_decay=0.01)
    ours = run(GaLoreAdamW, proj_type, **kw)
    theirs = run(reference.GaLoreAdamW, proj_type, **kw)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=f"step {step}")
    moved = [float((x - y).abs().max()) for x, y in zip(ours[-1], [p.detach() for p in make_params()[0]])]
    assert min(moved) > 1e-3  # the comparison is not vacuous: weights moved


def test_plain_group_matches_torch_adamw():
    g = torch.Generator().manual_seed(0)
    a = torch.nn.Parameter(torch.randn(10, 7, generator=g))
    b = torch.nn.Parameter(a.detach().clone())
    ours = GaLoreAdamW([a], lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    torch_opt = torch.optim.AdamW([b], lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    for step in range(6):
        grad = torch.randn(10, 7, generator=g)
        a.grad, b.grad = grad.clone(), grad.clone()
        ours.step()
        torch_opt.step()
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_projector_is_recomputed_every_gap():
    mats, _ = make_params()
    p = mats[0]
    opt = GaLoreAdamW([{"params": [p], "rank": 4, "update_proj_gap": 3}], lr=1e-3)
    seen = []
    for step in range(7):
        p.grad = grads_for(step, [p])[0]
        opt.step()
        seen.append(opt.state[p]["projector"].clone())
    changed = [not torch.equal(seen[i], seen[i - 1]) for i in range(1, 7)]
    assert changed == [False, False, True, False, False, True]  # new SVD at steps 0, 3, 6
    assert opt.state[p]["exp_avg"].shape == (48, 4)  # Adam runs in the projected space


def test_state_is_tensors_only_and_resumes_exactly():
    mats, bias = make_params()
    groups = [{"params": mats, "rank": 6, "update_proj_gap": 2}, {"params": [bias]}]
    opt = GaLoreAdamW(groups, lr=1e-2)
    params = mats + [bias]
    for step in range(3):
        for p, g in zip(params, grads_for(step, params)):
            p.grad = g
        opt.step()
    buffer = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "params": [p.detach().clone() for p in params]}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    restored = [torch.nn.Parameter(t) for t in saved["params"]]
    opt2 = GaLoreAdamW([{"params": restored[:3], "rank": 6, "update_proj_gap": 2}, {"params": [restored[3]]}], lr=1e-2)
    opt2.load_state_dict(saved["opt"])
    for step in range(3, 6):
        for p, q, g in zip(params, restored, grads_for(step, params)):
            p.grad, q.grad = g, g.clone()
        opt.step()
        opt2.step()
    for p, q in zip(params, restored):
        assert torch.equal(p, q)


def test_galore_group_rejects_non_matrices():
    with pytest.raises(ValueError, match=r"shape \(4,\).*2-D weights"):
        GaLoreAdamW([{"params": [torch.nn.Parameter(torch.zeros(4))], "rank": 2}])
    with pytest.raises(ValueError, match="proj_type='full'"):
        GaLoreAdamW([{"params": [torch.nn.Parameter(torch.zeros(4, 4))], "rank": 2, "proj_type": "full"}])


def test_projection_round_trip_on_low_rank_gradient():
    g = torch.Generator().manual_seed(0)
    grad = torch.randn(30, 3, generator=g) @ torch.randn(3, 20, generator=g)
    for proj_type in ("std", "reverse_std"):
        side = projection_side(grad.shape, proj_type)
        q = compute_projector(grad, 3, side)
        low = project(grad, q, side)
        assert min(low.shape) == 3
        torch.testing.assert_close(project_back(low, q, side), grad, rtol=1e-4, atol=1e-4)
    assert projection_side((30, 20), "std") == "right" and projection_side((20, 30), "std") == "left"


def test_svd_failure_falls_back(monkeypatch, caplog):
    from ows.optim import projector as projector_module

    mats, _ = make_params()
    p = mats[0]
    opt = GaLoreAdamW([{"params": [p], "rank": 4, "update_proj_gap": 2}], lr=1e-3)
    real_svd = torch.linalg.svd
    calls = {"n": 0}

    def failing_svd(matrix, *args, **kwargs):
        if matrix.shape != p.shape:  # the randomized SVD's small inner SVD still works
            return real_svd(matrix, *args, **kwargs)
        calls["n"] += 1
        raise torch.linalg.LinAlgError("did not converge")

    monkeypatch.setattr(projector_module.torch.linalg, "svd", failing_svd)
    p.grad = grads_for(0, [p])[0]
    opt.step()  # no previous projector: randomized SVD
    first = opt.state[p]["projector"].clone()
    assert first.shape == (4, 32) and torch.isfinite(first).all()
    exact = real_svd(p.grad, full_matrices=False)[2][:4]
    # the gradient is nearly rank 3: the randomized basis spans the same top directions
    overlap = (first[:3] @ exact[:3].t()).abs().sum(dim=1)
    assert (overlap > 0.99).all()
    p.grad = grads_for(1, [p])[0]
    opt.step()
    p.grad = grads_for(2, [p])[0]
    opt.step()  # step 2 is a projector update: it fails again, the previous projector is kept
    assert torch.equal(opt.state[p]["projector"], first)
    assert calls["n"] == 2 and "keeping its previous projector" in caplog.text


def test_the_svd_key_picks_the_projector_function(monkeypatch):
    import ows.optim.galore_adamw as module

    calls = []
    for name in ("compute_projector", "randomized_projector"):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    for method in ("exact", "randomized"):
        w = torch.nn.Parameter(torch.zeros(8, 6))
        opt = GaLoreAdamW([{"params": [w], "rank": 2, "svd": method}], lr=0.1)
        w.grad = torch.randn(8, 6)
        opt.step()
    assert calls == ["compute_projector", "randomized_projector"]


def test_config_svd_method_reaches_the_galore_group():
    from ows import OWSConfig, build_param_groups
    from tests.conftest import tiny_model

    groups = build_param_groups(tiny_model(), OWSConfig(svd_method="randomized"))
    assert {g["svd"] for g in groups if "rank" in g} == {"randomized"}  # the layers' and the outside weights'
    # the default, auto: gram for the weights outside the decoder layers (vocabulary-sized), exact inside
    default = {g["ows_group"]: g["svd"] for g in build_param_groups(tiny_model(), OWSConfig()) if "rank" in g}
    assert default == {"layers_galore": "exact", "always": "gram"}


def test_svd_for_resolves_auto_per_weight():
    from ows.choices import svd_for

    assert (svd_for("auto", outside=True), svd_for("auto", outside=False)) == ("gram", "exact")
    assert {svd_for(m, o) for m in ("exact", "randomized", "gram") for o in (True, False)} == {"exact", "randomized",
                                                                                                "gram"}
    assert svd_for("randomized", True) == svd_for("randomized", False) == "randomized"


@pytest.mark.parametrize("side", ["left", "right"])
def test_add_projected_equals_the_full_update_in_any_slices(monkeypatch, side):
    from ows.optim import projector as projector_module

    g = torch.Generator().manual_seed(0)
    target = torch.randn(37, 11, generator=g)
    projector = torch.randn(37, 4, generator=g) if side == "left" else torch.randn(4, 11, generator=g)
    low = torch.randn(4, 11, generator=g) if side == "left" else torch.randn(37, 4, generator=g)
    expected = target - 0.3 * project_back(low, projector, side)
    for chunk in (1 << 22, 30, 1):  # one piece; slices of 2 rows (the last one short); one row at a time
        monkeypatch.setattr(projector_module, "GRAM_CHUNK", chunk)
        out = target.clone()
        projector_module.add_projected(out, low, projector, side, -0.3)
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


def test_a_failed_gram_eigendecomposition_keeps_the_previous_projector(monkeypatch, caplog):
    from ows.optim import projector as projector_module

    w = torch.nn.Parameter(torch.randn(40, 12))
    opt = GaLoreAdamW([{"params": [w], "rank": 3, "update_proj_gap": 1, "svd": "gram"}], lr=0.01)
    w.grad = torch.randn(40, 12)
    opt.step()
    first = opt.state[w]["projector"].clone()

    def failing_eigh(*args, **kwargs):
        raise torch.linalg.LinAlgError("did not converge")

    monkeypatch.setattr(projector_module.torch.linalg, "eigh", failing_eigh)
    w.grad = torch.randn(40, 12)
    with caplog.at_level("WARNING"):
        opt.step()  # due again (T = 1), fails: the previous projector stays and training goes on
    assert torch.equal(opt.state[w]["projector"], first) and "Gram matrix" in caplog.text


def test_a_bf16_galore_step_matches_the_fp32_update_to_bf16_precision():
    g = torch.Generator().manual_seed(0)
    start, grad = torch.randn(64, 24, generator=g), torch.randn(64, 24, generator=g)
    weights = {}
    for dtype in (torch.float32, torch.bfloat16):
        w = torch.nn.Parameter(start.clone().to(dtype))
        opt = GaLoreAdamW([{"params": [w], "rank": 4, "scale": 0.25}], lr=0.1)
        w.grad = grad.to(dtype)
        opt.step()
        weights[dtype] = w.detach().float()
    moved = (weights[torch.float32] - start).abs().max()
    assert moved > 0.01  # the step moved the weights by far more than bf16's rounding
    torch.testing.assert_close(weights[torch.bfloat16], weights[torch.float32], rtol=2e-2, atol=2e-2)


def test_a_galore_step_never_makes_a_full_size_temporary(monkeypatch):
    from torch.utils._python_dispatch import TorchDispatchMode

    from ows.optim import projector as projector_module

    class LargestOutput(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t._base is None and t.data_ptr() not in self.inputs:
                    LargestOutput.largest = max(LargestOutput.largest, t.numel())
            return out

    monkeypatch.setattr(projector_module, "GRAM_CHUNK", 256)
    for side_shape in ((400, 16), (16, 400)):  # a tall weight (right side) and a wide one (left side)
        w = torch.nn.Parameter(torch.randn(*side_shape))
        opt = GaLoreAdamW([{"params": [w], "rank": 2, "svd": "gram", "scale": 0.25}], lr=0.1)
        w.grad = torch.randn(*side_shape)
        before = w.detach().clone()
        mode = LargestOutput()
        mode.inputs = {w.data_ptr(), w.grad.data_ptr()}
        LargestOutput.largest = 0
        with mode:
            opt.step()
        assert not torch.equal(w.detach(), before)  # the step did update the weight
        assert LargestOutput.largest < w.numel() // 2, side_shape  # no (m, n) update, gradient copy or SVD factor


def test_randomized_svd_group_recovers_a_low_rank_gradient_subspace():
    g = torch.Generator().manual_seed(0)
    grad = torch.randn(64, 6, generator=g) @ torch.randn(6, 40, generator=g) + 1e-3 * torch.randn(64, 40, generator=g)
    weights = {m: torch.nn.Parameter(torch.zeros(64, 40)) for m in ("exact", "randomized")}
    for method, w in weights.items():
        opt = GaLoreAdamW([{"params": [w], "rank": 6, "update_proj_gap": 10, "svd": method}], lr=0.1)
        w.grad = grad.clone()
        opt.step()
        projector = opt.state[w]["projector"]
        side = projection_side(w.shape, "std")
        captured = project_back(project(grad, projector, side), projector, side).norm() / grad.norm()
        assert captured > 0.999, method
    torch.testing.assert_close(weights["randomized"], weights["exact"], rtol=1e-3, atol=1e-3)


def test_unknown_svd_method_is_rejected():
    with pytest.raises(ValueError, match="svd='fast'"):
        GaLoreAdamW([{"params": [torch.nn.Parameter(torch.zeros(4, 4))], "rank": 2, "svd": "fast"}])
