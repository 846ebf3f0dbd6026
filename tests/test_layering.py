"""The layering of ../shared/STYLE.md, read from the imports (function-level ones too).

An arrow that points up (the EV core importing a runner, a model importing a transport)
fails here, naming the file, the line and the import.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package (a path under the repo) -> module prefixes it must never import
RULES = {
    "psrec/ev": ("psrec.ps", "collective", "psrec.core", "psrec.commands", "psrec.experiments", "ray", "grpc"),
    "psrec/models": ("psrec.ev", "psrec.ps", "collective", "psrec.embedding", "psrec.core", "psrec.data", "ray"),
    "psrec/data": ("psrec.models", "psrec.embedding", "psrec.ev", "psrec.ps", "collective", "psrec.core", "ray",
                   "torch"),
    # the straggler model (workqueue.stragglers) is a pure function of time the simulator shares
    "psrec/sim": ("psrec.core", "psrec.ps", "collective", "psrec.embedding", "psrec.ev", "psrec.models",
                  "psrec.experiments", "workqueue.actor", "workqueue.queue", "ray", "torch"),
    "psrec/comm": ("psrec.ps", "collective", "psrec.core", "psrec.embedding", "ray"),
    "psrec/embedding": ("psrec.ps", "collective", "psrec.core", "ray"),
    "psrec/core": ("psrec.ps", "collective", "psrec.commands", "psrec.experiments"),
    "psrec/ps": ("collective", "psrec.commands", "psrec.experiments"),
    "collective": ("psrec.ps", "psrec.commands", "psrec.experiments"),
    "workqueue": ("psrec",),
}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def violations(package: str, banned: tuple[str, ...]) -> list[str]:
    bad = []
    for f in sorted((ROOT / package).rglob("*.py")):
        for line, mod in imports_of(f):
            if any(mod == b or mod.startswith(b + ".") for b in banned):
                bad.append(f"{f.relative_to(ROOT)}:{line} imports {mod}")
    return bad


@pytest.mark.parametrize("package", sorted(RULES))
def test_package_imports_point_down(package):
    assert (ROOT / package).is_dir(), package
    assert violations(package, RULES[package]) == []


def test_the_check_catches_an_upward_import(tmp_path, monkeypatch):
    """The rule is live: a core file importing a runner is reported by file and line."""
    pkg = tmp_path / "psrec" / "ev"
    pkg.mkdir(parents=True)
    (pkg / "bad.py").write_text("import numpy\n\ndef f():\n    from psrec.ps.runner import run_ps\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert violations("psrec/ev", RULES["psrec/ev"]) == ["psrec/ev/bad.py:4 imports psrec.ps.runner"]
