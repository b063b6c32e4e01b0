"""The house itself: every module imports on its own, functions stay short, predict stays
light, and the README's Python API example runs as written."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nnletters"
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py"))
# Functions allowed past MAX_LINES, each with the reason it reads better whole.
LONG_FUNCTIONS: dict[str, str] = {}
MAX_LINES = 60


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    procs = {m: subprocess.Popen([sys.executable, "-c", f"import {m}"], env=_env(),
                                 stderr=subprocess.PIPE, text=True) for m in MODULES}
    failed = {m: p.communicate()[1].strip().splitlines()[-1:] for m, p in procs.items()
              if p.wait() != 0}
    assert not failed, failed
    assert len(MODULES) > 30 and "nnletters.cli" in MODULES


def test_no_function_is_longer_than_about_sixty_lines():
    long = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                name = f"{path.relative_to(ROOT)}:{node.name}"
                if lines > MAX_LINES and name not in LONG_FUNCTIONS:
                    long[name] = lines
    assert not long, long


def test_predict_imports_only_numpy_pillow_and_click(tmp_path):
    """`nnletters predict` in a real process: the third-party packages it loaded."""
    from tests.test_api import tiny_run  # a trained run folder, made once per session

    run = tiny_run(tmp_path)
    image = ROOT / "data" / "samples" / "A.png"
    # Modules the interpreter loaded before (site hooks) are not predict's doing.
    code = ("import sys\nbefore = set(sys.modules)\nfrom nnletters.cli import main\n"
            "try:\n    main(['predict', sys.argv[1], '--checkpoint', sys.argv[2]])\n"
            "except SystemExit:\n    pass\n"
            "print(' '.join(sorted({m.split('.')[0] for m in set(sys.modules) - before})),"
            " file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code, str(image), str(run)], env=_env(),
                            capture_output=True, text=True, check=True)
    loaded = set(result.stderr.split())
    assert {"numpy", "PIL", "click"} <= loaded
    third_party = {m for m in loaded - set(sys.stdlib_module_names)
                   if not m.startswith("_") and m != "cython_runtime"}  # numpy's Cython
    assert third_party == {"nnletters", "numpy", "PIL", "click"}, third_party


def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    """The README's example, run as written in a scratch folder (fewer epochs and
    images, through the config overrides it already uses)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    code = code.replace('"configs/quickstart.yaml"', repr(str(ROOT / "configs/quickstart.yaml")))
    code = code.replace('"data/samples/', '"' + str(ROOT / "data" / "samples") + '/')
    code = code.replace('overrides=["train.epochs=3"]',
                        'overrides=["train.epochs=2", "data.synthetic.per_class=20"]')
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    assert (tmp_path / "runs" / "api-demo" / "best.npz").exists()
    assert namespace["predictions"][0]["label"] in namespace["model"].classes


@pytest.mark.parametrize("name", ["load_config", "train", "resume", "load_model", "evaluate",
                                  "Callback", "Model", "Run"])
def test_public_api_names_resolve(name):
    import nnletters

    assert getattr(nnletters, name) is not None
    assert name in nnletters.__all__
