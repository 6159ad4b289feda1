import subprocess
import sys

CORE = ["ows", "ows.config", "ows.layers", "ows.outliers", "ows.sampling", "ows.controller", "ows.optim", "ows.memory.measure", "ows.memory.estimate", "ows.losses", "ows.distributed"]


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
