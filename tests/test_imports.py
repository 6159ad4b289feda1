import subprocess
import sys

CORE = ["ows", "ows.config", "ows.methods", "ows.layers", "ows.outliers", "ows.sampling", "ows.controller",
        "ows.distributed", "ows.losses", "ows.optim", "ows.optim.galore_adamw", "ows.optim.projector",
        "ows.optim.sharded", "ows.optim.param_groups", "ows.optim.fused", "ows.optim.lowbit", "ows.memory.measure",
        "ows.memory.estimate",
        "ows.memory.shape", "ows.memory.plan", "ows.memory.state", "ows.memory.weights", "ows.frozen", "ows.export",
        "ows.lora_extract", "ows.jsonio"]
# Modules that import no torch at all (the memory estimator, the registry, the option fields of every command).
TORCH_FREE = ["ows.config", "ows.methods", "ows.memory", "ows.memory.estimate", "ows.memory.shape",
              "ows.memory.plan", "ows.memory.state", "ows.memory.weights", "ows.jsonio", "ows.cli.arguments"]


def test_core_does_not_import_transformers():
    code = (
        "import sys\n"
        f"for m in {CORE!r}: __import__(m)\n"
        "heavy = [m for m in ('transformers', 'datasets', 'peft', 'lm_eval', 'accelerate') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "import ows\n"
        "assert callable(ows.prepare_for_trainer) and 'transformers' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_public_api_names():
    import ows

    for name in ["OWSConfig", "profile_outliers", "OutlierProfile", "LayerSampler", "GaLoreAdamW",
                 "build_param_groups", "OWSController", "prepare_for_trainer"]:
        assert name in ows.__all__ and getattr(ows, name) is not None


def test_cli_help_imports_no_torch():
    code = "import sys, ows.cli; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    result = subprocess.run([sys.executable, "-m", "ows.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "ows train" in result.stdout


def test_every_core_module_is_listed():
    from pathlib import Path

    import ows

    root = Path(ows.__file__).parent
    core_files = [p for p in root.glob("*.py") if p.stem not in ("__init__", "loading")]
    core_files += list((root / "optim").glob("*.py")) + list((root / "memory").glob("*.py"))
    names = {("ows." + ".".join(p.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
             for p in core_files}
    assert names <= set(CORE) | {"ows.memory"}, sorted(names - set(CORE))


def test_torch_free_modules_import_no_torch():
    code = f"import sys\nfor m in {TORCH_FREE!r}: __import__(m)\nassert 'torch' not in sys.modules, 'torch'\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
