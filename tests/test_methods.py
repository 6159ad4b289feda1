"""The method registry: traits, one list of names, and a new method reaching every consumer through it."""

import ast
import contextlib
import io
import json
from pathlib import Path

import pytest

from ows import OWSConfig
from ows.memory.estimate import estimate_memory
from ows.methods import Method, MethodSetup, _REGISTRY, build_method, get_method, method_names, register_method

ROOT = Path(__file__).resolve().parents[1]
LLAMA = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100}


def test_traits_of_the_builtin_methods():
    builtin = method_names()[:7]  # the benchmarks' peers register theirs after these when imported
    assert builtin == ("full", "lora", "qlora", "galore", "lisa", "ows-fullrank", "ows")
    assert [m for m in builtin if get_method(m).samples_layers] == ["lisa", "ows-fullrank", "ows"]
    assert [m for m in builtin if get_method(m).galore] == ["galore", "ows"]
    assert get_method("lisa").config_for(OWSConfig()).sampling_strategy == "uniform"
    assert get_method("ows-fullrank").config_for(OWSConfig()).use_galore is False
    assert not get_method("ows").needs_profile(OWSConfig()) and not get_method("lisa").needs_profile(OWSConfig())
    assert get_method("ows").needs_profile(OWSConfig(sampling_strategy="owl"))  # the paper's (configs/paper.yaml)
    assert get_method("ows-fullrank").needs_profile(OWSConfig())
    assert not get_method("ows").needs_profile(OWSConfig(sampling_strategy="increase"))


def test_unknown_method_names_the_known_ones():
    with pytest.raises(ValueError, match="method='dora' is unknown: use one of " + ", ".join(method_names())):
        get_method("dora")
    with pytest.raises(ValueError, match="already registered"):
        register_method(get_method("ows"))


def _literal_lists(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            names = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            yield node.lineno, names


def test_method_names_are_spelled_out_as_a_list_in_one_module_only():
    known = set(method_names())
    offenders = []
    for folder in ("src", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            for line, names in _literal_lists(path):
                if len(known.intersection(names)) >= 3 and path.name != "methods.py":
                    offenders.append(f"{path.relative_to(ROOT)}:{line}")
    assert not offenders, offenders


@pytest.fixture
def extra_method():
    """A method registered for one test: uniform sampling with GaLore, built by the sampling builder."""
    sampled = get_method("ows").builder
    method = register_method(Method("lisa-galore", "uniform sampling + GaLore", "LISA + GaLore", layers="sampled",
                                    galore=True, builder=sampled, strategy="uniform"))
    yield method
    del _REGISTRY[method.name]


def test_a_registered_method_reaches_the_builder_the_estimator_and_the_cli(extra_method, tiny_model_dir):
    from ows.cli import main
    from ows.loading import load_model

    setup = build_method("lisa-galore", load_model(str(tiny_model_dir)), OWSConfig(num_active_layers=2, rank=4))
    assert isinstance(setup, MethodSetup) and setup.name == "lisa-galore"
    assert setup.config.sampling_strategy == "uniform" and setup.config.use_galore
    assert any("rank" in g for g in setup.optimizer.param_groups)
    ows = estimate_memory(LLAMA, "ows", num_active_layers=2, outside_optimizer="adamw",
                          sampling_granularity="layer")  # lisa-galore's defaults
    new = estimate_memory(LLAMA, "lisa-galore", num_active_layers=2)
    assert new.total == ows.total and new.projectors > 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["memory", "smollm2-135m", "--json"]) == 0
    assert [e["method"] for e in json.loads(out.getvalue())["estimates"]][-1] == "lisa-galore"
