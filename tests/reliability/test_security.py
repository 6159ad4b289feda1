"""No code execution from inputs: no eval/exec/pickle, safe torch.load, remote code off by default."""

import ast
from pathlib import Path

import ows
from ows.cli.arguments import ScriptArguments

SRC = Path(ows.__file__).parent


def calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            yield name, node


def test_no_eval_exec_or_pickle_in_the_package():
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for name, node in calls(tree):
            if isinstance(node.func, ast.Name):  # model.eval() is fine; the builtins are not
                assert name not in ("eval", "exec", "__import__", "compile"), f"{path}:{node.lineno}"
            if name == "load" and isinstance(node.func, ast.Attribute) and getattr(node.func.value, "id", "") == "torch":
                kw = {k.arg: k.value for k in node.keywords}
                assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, \
                    f"{path}:{node.lineno}"
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.split(".")[0] in ("pickle", "dill", "marshal") for n in names), f"{path}:{node.lineno}"
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                assert not (isinstance(node.value, ast.Constant) and node.value.value is True), f"{path}:{node.lineno}"


def test_remote_code_is_off_by_default():
    assert ScriptArguments().trust_remote_code is False


def test_a_checkpoint_holding_a_pickled_object_is_refused_and_nothing_in_it_runs(tiny_model_dir, tmp_path):
    import pytest

    pytest.importorskip("transformers")
    from bad_inputs import cases, run_case

    case = next(c for c in cases(tiny_model_dir, tmp_path) if c.what == "checkpoint holding a pickled object")
    code, lines, _ = run_case(case)
    assert code == 2 and len(lines) == 1 and "is not a tensor-only checkpoint file and is refused" in lines[0]
    assert not (tmp_path / "pwned").exists()  # the object's __reduce__ would have created it
