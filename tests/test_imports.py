import subprocess
import sys

CORE = ["ows", "ows.choices", "ows.config", "ows.validation", "ows.methods", "ows.layers", "ows.outliers", "ows.sampling",
        "ows.samplers", "ows.controller",
        "ows.distributed", "ows.losses", "ows.optim", "ows.optim.galore_adamw", "ows.optim.projector",
        "ows.optim.sharded", "ows.optim.param_groups", "ows.optim.fused", "ows.optim.lowbit", "ows.memory.measure",
        "ows.memory.estimate",
        "ows.memory.shape", "ows.memory.plan", "ows.memory.size", "ows.memory.state", "ows.memory.weights", "ows.frozen", "ows.export",
        "ows.export.weights", "ows.export.folders", "ows.export.delta", "ows.export.merge", "ows.export.lora",
        "ows.jsonio", "ows.errors", "ows.model_facts", "ows.frozen_embeddings",
        "ows.granularity", "ows.importance", "ows.optim.head_grad", "ows.memory.loss", "ows.memory.logits"]
# Modules that import no torch at all (the memory estimator, the registry, the option fields of every command).
TORCH_FREE = ["ows.choices", "ows.config", "ows.methods", "ows.memory", "ows.memory.estimate", "ows.memory.shape", "ows.memory.loss", "ows.memory.logits",
              "ows.memory.plan", "ows.memory.size", "ows.memory.state", "ows.memory.weights", "ows.jsonio", "ows.cli.arguments",
              "ows.errors", "ows.model_facts", "ows.recipe.arguments", "ows.recipe.budget", "ows.granularity"]


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
    core_files += [p for folder in ("optim", "memory", "export") for p in (root / folder).glob("*.py")]
    names = {("ows." + ".".join(p.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
             for p in core_files}
    assert names <= set(CORE) | {"ows.memory"}, sorted(names - set(CORE))


def test_torch_free_modules_import_no_torch():
    code = f"import sys\nfor m in {TORCH_FREE!r}: __import__(m)\nassert 'torch' not in sys.modules, 'torch'\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def _import_graph() -> dict[str, set[str]]:
    """ows module -> the ows modules it imports (at the top or inside a function), from the source."""
    import ast
    from pathlib import Path

    import ows

    root = Path(ows.__file__).parent
    modules = {("ows." + ".".join(p.relative_to(root).with_suffix("").parts)).removesuffix(".__init__"): p
               for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(max(node.level - 1, 0)):
                    base = base.rsplit(".", 1)[0]
                stem = f"{base}.{node.module}" if node.level and node.module else (base if node.level else node.module)
                candidates = [f"{stem}.{alias.name}" for alias in node.names] + [stem]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            targets.update(c for c in candidates if c in modules and c != name)
        graph[name] = targets
    return graph


def test_no_import_circle_in_src():
    graph = _import_graph()
    # a package's __init__ re-exporting its modules is not a circle: leave the package edges out
    packages = {m for m in graph if any(other.startswith(m + ".") for other in graph)}
    edges = {m: {t for t in targets if t not in packages} for m, targets in graph.items()}
    seen: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in edges[node]:
            assert seen.get(nxt) != 1, "import circle: " + " -> ".join(path[path.index(nxt):] + [nxt])
            if nxt not in seen:
                visit(nxt, path + [nxt])
        seen[node] = 2

    for module in edges:
        if module not in seen:
            visit(module, [module])


def test_the_method_registry_imports_no_framework_integration():
    graph = _import_graph()
    assert not {t for t in graph["ows.methods"] if t.startswith(("ows.integrations", "ows.recipe", "ows.cli"))}


def test_the_examples_name_only_functions_that_exist():
    import re
    from pathlib import Path

    import ows

    root = Path(__file__).resolve().parents[1]
    for path in (root / "examples").glob("*.py"):
        for name in re.findall(r"\bows\.([a-z_][a-z0-9_]*)\(", path.read_text()):
            assert hasattr(ows, name), f"{path.name}: ows.{name} does not exist"


def test_the_demo_time_in_ows_help_is_the_readmes():
    import re
    from pathlib import Path

    from ows.cli import EPILOG

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text().splitlines()[3]
    minutes = re.search(r"~(\d+) min", readme).group(1)
    assert f"CPU, ~{minutes} min" in EPILOG
