"""Property-based tests: config parsing and data formatting never fail in unexpected ways."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ows import OWSConfig
from ows.cli.common import UsageError
from ows.cli.options import check_value, convert

values = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True),
                   st.text(max_size=12), st.lists(st.floats(-1, 2), max_size=4))
fields = st.sampled_from(sorted(OWSConfig.field_help()) + ["gamma", "lr"])


@given(st.dictionaries(fields, values, max_size=4))
@settings(max_examples=300, deadline=None)
def test_config_from_any_dict_is_valid_or_a_one_line_value_error(data):
    try:
        config = OWSConfig.from_dict(data)
    except ValueError as err:
        message = str(err)
        assert "\n" not in message and ("OWSConfig" in message or "sampling_weights" in message)
        return
    assert OWSConfig.from_json(config.to_json()) == config  # anything accepted round-trips
    assert 1 <= config.num_active_layers and 1 <= config.rank and config.outlier_threshold > 0


@given(st.text(max_size=20), st.sampled_from([int, float, bool, str, "int | None", "list[float] | None"]))
@settings(max_examples=300, deadline=None)
def test_flag_conversion_is_typed_or_a_usage_error(text, tp):
    tp = {"int | None": int | None, "list[float] | None": list[float] | None}.get(tp, tp)
    try:
        value = convert(text, tp, "field")
    except UsageError as err:
        assert "--field" in str(err) and "\n" not in str(err)
        return
    base = tp if isinstance(tp, type) else None
    if base is not None:
        assert isinstance(value, base)


@given(values, st.sampled_from([int, float, bool, str]))
@settings(max_examples=300, deadline=None)
def test_yaml_values_are_checked_against_the_annotation(value, tp):
    try:
        checked = check_value(value, tp, "field", "c.yaml")
    except UsageError as err:
        assert str(err).startswith("c.yaml: field")
        return
    assert isinstance(checked, tp) and (tp is not int or not isinstance(value, bool))


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@given(prompt=st.text(max_size=40), completion=st.text(min_size=1, max_size=40), limit=st.integers(1, 64))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_encoded_examples_keep_masks_consistent(tokenizer, prompt, completion, limit):
    from ows.data.encode import encode_example

    example = encode_example({"prompt": prompt, "completion": completion}, "prompt_completion", tokenizer, limit)
    if example is None:  # nothing left to learn from after truncation
        return
    ids, labels, mask = example["input_ids"], example["labels"], example["attention_mask"]
    assert len(ids) == len(labels) == len(mask) <= limit
    assert any(l != -100 for l in labels)
    assert all(l in (-100, i) for l, i in zip(labels, ids))  # a label is its own token or ignored
    first = next(k for k, l in enumerate(labels) if l != -100)
    assert all(l != -100 for l in labels[first:])  # the completion is one contiguous tail


def _train_fields():
    from ows.cli.train import _fields

    return sorted(_fields().fields)


yaml_values = st.one_of(st.none(), st.booleans(), st.integers(-2, 3), st.integers(-10**25, 10**25),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10),
                        st.lists(st.one_of(st.floats(-1, 2), st.text(max_size=4)), max_size=3),
                        st.dictionaries(st.text(max_size=4), st.integers(0, 3), max_size=2))


@pytest.fixture(scope="module")
def train_fields():
    pytest.importorskip("transformers")
    return _train_fields()


@given(data=st.data(), value=yaml_values)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_yaml_value_of_any_train_field_parses_or_is_one_line_naming_the_field(train_fields, tmp_path, data, value):
    import yaml

    from ows.cli.train import parse
    from ows.recipe.trainer import training_arguments

    name = data.draw(st.sampled_from([f for f in train_fields if not f.startswith(("hub_", "push_to_hub"))]))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({name: value}))
    argv = [str(config), "--model", "m", "--dataset", "d.jsonl", "--output_dir", str(tmp_path / "o")]
    try:
        _, _, training = parse(argv)
        training_arguments(dict(training), has_eval=False)
    except (UsageError, ValueError, FileNotFoundError) as err:  # ows.cli.main: exit 2, one line
        message = str(err)
        assert "\n" not in message and name in message, (name, value, message)
