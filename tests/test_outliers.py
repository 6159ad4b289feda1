import torch
import pytest

from ows import OWSConfig, OutlierProfile, find_decoder_layers, layer_outlier_ratio, profile_outliers, sampling_probabilities
from ows.layers import linear_modules, weight_in_out
from conftest import tiny_model


def reference_ratios(model, batches, threshold):
    """Straightforward OWL computation: capture every linear input in full, then score."""
    layers = find_decoder_layers(model)
    captured = {}
    hooks = []
    for li, layer in enumerate(layers):
        for name, module in linear_modules(layer):
            def hook(mod, inp, out, key=(li, name)):
                captured.setdefault(key, []).append(inp[0].detach().reshape(-1, inp[0].shape[-1]))
            hooks.append(module.register_forward_hook(hook))
    model.eval()  # no dropout, as in profile_outliers
    with torch.no_grad():
        for batch in batches:
            model(input_ids=batch)
    for h in hooks:
        h.remove()
    ratios = []
    for li, layer in enumerate(layers):
        scores = []
        for name, module in linear_modules(layer):
            x = torch.cat(captured[(li, name)]).double()
            norm = x.norm(dim=0)  # ||X_j||_2 over all tokens
            scores.append((weight_in_out(module).double().abs() * norm).flatten())
        scores = torch.cat(scores)
        ratios.append(float((scores > threshold * scores.mean()).double().mean()))
    return ratios


def batches(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 96, (2, 12), generator=g) for _ in range(n)]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_matches_reference_and_planted_layers_rank_highest(arch):
    model = tiny_model(arch, layers=6)
    layers = find_decoder_layers(model)
    planted = (1, 4)
    with torch.no_grad():
        for li in planted:  # plant outlier columns: a few input features with huge weights
            for _, module in linear_modules(layers[li]):
                weight_in_out(module)[:, :2] *= 40.0
    profile = profile_outliers(model, batches(), threshold=5.0)
    expected = reference_ratios(model, batches(), 5.0)
    assert profile.ratios == pytest.approx(expected, abs=1e-6)
    if arch == "llama":  # GPT-2's un-normalised residual stream carries planted columns into later layers
        top_two = sorted(range(6), key=lambda i: profile.ratios[i])[-2:]
        assert sorted(top_two) == list(planted)
    assert min(profile.ratios[i] for i in planted) > 2 * profile.ratios[0]
    assert profile.num_tokens == 3 * 2 * 12 and profile.threshold == 5.0


def test_padding_is_excluded():
    model = tiny_model("llama", layers=2)
    ids = torch.randint(0, 96, (2, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    padded = profile_outliers(model, [{"input_ids": ids, "attention_mask": mask}], threshold=3.0)
    # the same real tokens, without padding, as two separate batches
    unpadded = profile_outliers(model, [ids[:1], ids[1:, :6]], threshold=3.0)
    assert padded.ratios == pytest.approx(unpadded.ratios, abs=1e-9)
    assert padded.num_tokens == 16


def test_profiling_does_not_change_the_model():
    model = tiny_model("llama", layers=3)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    profile_outliers(model, batches(1))
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())


def test_layer_outlier_ratio_pure_function():
    w = torch.ones(4, 4)
    w[0, 0] = 100.0
    assert layer_outlier_ratio([w], [torch.ones(4)], threshold=5.0) == pytest.approx(1 / 16)
    assert layer_outlier_ratio([w], [torch.ones(4)], threshold=50.0) == 0.0


def test_json_round_trip_and_errors(tmp_path):
    profile = profile_outliers(tiny_model("llama", layers=3), batches(1), model_name="tiny")
    path = tmp_path / "profile.json"
    profile.to_json(path)
    loaded = OutlierProfile.from_json(path)
    assert loaded == profile and loaded.model_name == "tiny" and loaded.layers_path == "model.layers"
    assert sum(sampling_probabilities(loaded.ratios, "owl")) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="has 3 layers but the model has 5"):
        OWSConfig(num_active_layers=2, sampling_strategy="owl").check_for(5, loaded.ratios)
    with pytest.raises(FileNotFoundError, match="ows analyze"):
        OutlierProfile.from_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"ratio": [1]}')
    with pytest.raises(ValueError, match="not a valid ows profile"):
        OutlierProfile.from_json(tmp_path / "bad.json")


def test_bad_threshold_and_empty_batches():
    model = tiny_model("llama", layers=2)
    with pytest.raises(ValueError, match="threshold=0"):
        profile_outliers(model, batches(1), threshold=0)
    with pytest.raises(ValueError, match="no tokens"):
        profile_outliers(model, [])
