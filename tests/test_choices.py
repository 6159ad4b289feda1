"""The rules in ows.choices that the run and the estimator share."""

import pytest

from ows.choices import head_grad_kept_whole

NONE = dict(several_processes=False, grad_scaler=False, fused_step=False, tied=False, head_bias=False)


def test_the_head_gradient_is_projected_only_when_nothing_keeps_it_whole():
    assert head_grad_kept_whole(**NONE) is None


@pytest.mark.parametrize("field, why", [("several_processes", "several processes"), ("grad_scaler", "fp16's grad scaler"),
                                        ("fused_step", "fused_step"), ("tied", "a tied head"),
                                        ("head_bias", "a trained head bias")])
def test_each_condition_keeps_the_head_gradient_whole_and_says_which(field, why):
    assert head_grad_kept_whole(**dict(NONE, **{field: True})) == why
