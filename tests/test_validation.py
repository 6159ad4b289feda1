import re
from types import SimpleNamespace

import pytest

from ows.validation import check_active_layers, check_bool, check_choice, check_float, check_int


def test_active_layers_must_fit_the_model_and_its_drawable_layers():
    check_active_layers(3, 3, 3)
    with pytest.raises(ValueError, match="num_active_layers=0 is invalid"):
        check_active_layers(0, 3)
    with pytest.raises(ValueError, match="num_active_layers=True is invalid"):
        check_active_layers(True, 3)
    with pytest.raises(ValueError, match="larger than the model's 3 decoder layers: use a value between 1 and 3"):
        check_active_layers(4, 3)
    with pytest.raises(ValueError, match="only 1 layers have a non-zero probability"):
        check_active_layers(2, 3, 1)


@pytest.mark.parametrize("check, value, args, message", [
    (check_int, 0, (1,), "must be an integer >= 1"),
    (check_int, 2.0, (1,), "must be an integer >= 1"),
    (check_float, float("nan"), (0.0,), "must be a finite number >= 0.0"),
    (check_float, 0.0, (0.0, True), "must be a finite number > 0.0"),
    (check_bool, "yes", (), "must be true or false"),
    (check_choice, "lyer", (("layer", "module"),), "use one of layer, module"),
])
def test_each_check_names_the_field_the_value_and_the_fix(check, value, args, message):
    with pytest.raises(ValueError, match=re.escape(f"OWSConfig.field={value!r} is invalid: {message}")):
        check(SimpleNamespace(field=value), "field", *args)


def test_good_values_pass():
    cfg = SimpleNamespace(i=3, f=0.5, b=False, c="module")
    check_int(cfg, "i", 1), check_float(cfg, "f", 0.0, True), check_bool(cfg, "b")
    check_choice(cfg, "c", ("layer", "module"))
