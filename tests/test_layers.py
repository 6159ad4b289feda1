import pytest
import torch
from torch import nn

from ows import find_decoder_layers, locate_decoder_layers, set_trainable
from conftest import tiny_model

ARCHS = ["llama", "mistral", "qwen2", "qwen3", "gemma3", "phi3", "gpt2", "gpt_neox"]


@pytest.mark.parametrize("arch", ARCHS)
def test_finds_decoder_layers_of_common_architectures(arch):
    model = tiny_model(arch, layers=3)
    found = locate_decoder_layers(model)
    assert len(found.modules) == 3
    assert found.modules is model.get_submodule(found.path)
    assert found.modules is find_decoder_layers(model)


def test_layers_attr_override_and_errors():
    model = tiny_model("llama", layers=3)
    assert len(find_decoder_layers(model, "model.layers")) == 3
    with pytest.raises(ValueError, match=r"layers_attr='model.blocks'.*'model.layers'"):
        find_decoder_layers(model, "model.blocks")
    with pytest.raises(ValueError, match="layers_attr="):
        find_decoder_layers(model, "model.norm")


def test_no_layers_found_names_the_fix():
    with pytest.raises(ValueError, match="pass layers_attr="):
        find_decoder_layers(nn.Sequential(nn.Linear(2, 2)))


def test_generic_fallback_longest_homogeneous_list():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = nn.ModuleList([nn.Linear(2, 2), nn.ReLU()])
            self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(4, 4)) for _ in range(3)])

    found = locate_decoder_layers(Net())
    assert found.path == "blocks"


def test_set_trainable_drops_grads():
    layer = nn.Linear(3, 3)
    layer(torch.ones(1, 3)).sum().backward()
    set_trainable([layer], False)
    assert all(not p.requires_grad and p.grad is None for p in layer.parameters())
    set_trainable([layer], True)
    assert all(p.requires_grad for p in layer.parameters())
