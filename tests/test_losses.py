"""Chunked cross-entropy equals the plain one (value and gradients) and never holds full logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ows.losses import chunked_cross_entropy, shift_for_causal_lm


def _inputs(n: int = 37, h: int = 8, v: int = 50, seed: int = 0, bias: bool = True):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, requires_grad=True)
    weight = torch.randn(v, h, generator=g, requires_grad=True)
    b = torch.randn(v, generator=g, requires_grad=True) if bias else None
    targets = torch.randint(0, v, (n,), generator=g)
    targets[::3] = -100
    return hidden, weight, b, targets


def _grads(loss, *tensors):
    return torch.autograd.grad(loss, [t for t in tensors if t is not None])


@pytest.mark.parametrize("chunk", [1, 5, 36, 37, 1000])
def test_value_and_gradients_match_plain_cross_entropy(chunk):
    hidden, weight, bias, targets = _inputs()
    reference = F.cross_entropy(F.linear(hidden, weight, bias), targets, ignore_index=-100, reduction="sum")
    chunked = chunked_cross_entropy(hidden, weight, targets, bias, chunk_size=chunk)
    torch.testing.assert_close(chunked, reference, rtol=1e-5, atol=1e-5)
    for got, want in zip(_grads(chunked, hidden, weight, bias), _grads(reference, hidden, weight, bias)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_ignored_tokens_get_zero_gradient_and_all_ignored_is_zero():
    hidden, weight, _, targets = _inputs(bias=False)
    loss = chunked_cross_entropy(hidden, weight, targets, chunk_size=4)
    (grad_hidden,) = torch.autograd.grad(loss, [hidden])
    assert torch.all(grad_hidden[targets == -100] == 0)
    assert torch.any(grad_hidden[targets != -100] != 0)
    none = chunked_cross_entropy(hidden, weight, torch.full_like(targets, -100), chunk_size=4)
    assert none.item() == 0.0


def test_no_saved_tensor_is_as_large_as_the_full_logits():
    n, v, chunk = 64, 500, 8
    hidden, weight, bias, targets = _inputs(n=n, v=v)
    targets[:] = torch.arange(n) % v
    sizes: list[int] = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = chunked_cross_entropy(hidden, weight, targets, bias, chunk_size=chunk)
    loss.backward()
    assert sizes, "the hook saw no saved tensors: the test measures nothing"
    assert max(sizes) < n * v / 4
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.cross_entropy(F.linear(hidden, weight, bias), targets, reduction="sum")
    assert max(sizes) >= n * v  # the plain loss does save full logits, so the bound above is meaningful


def test_bad_shapes_and_chunk_size_are_rejected():
    hidden, weight, _, targets = _inputs()
    with pytest.raises(ValueError, match="chunk_size=0"):
        chunked_cross_entropy(hidden, weight, targets, chunk_size=0)
    with pytest.raises(ValueError, match="must be"):
        chunked_cross_entropy(hidden, weight, targets[:-1])


def test_shift_for_causal_lm_predicts_the_next_token():
    labels = torch.tensor([[1, 2, 3], [4, -100, 6]])
    assert shift_for_causal_lm(labels).tolist() == [2, 3, -100, -100, 6, -100]


def test_a_batch_without_labelled_tokens_still_backpropagates_zero_gradients():
    hidden, weight, bias, targets = _inputs()
    loss = chunked_cross_entropy(hidden, weight, torch.full_like(targets, -100), bias, chunk_size=4)
    loss.backward()
    assert loss.item() == 0.0
    assert hidden.grad is not None and torch.all(hidden.grad == 0) and torch.all(weight.grad == 0)
