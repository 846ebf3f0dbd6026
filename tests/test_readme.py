"""The README's two commands stay what CI runs and what the quickstart does."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", quick, flags=re.S)


def test_readme_has_exactly_two_quickstart_commands():
    cmds = readme_commands()
    assert len(cmds) == 2, cmds
    assert all("\n" not in c for c in cmds), "each command is one line to paste"


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = readme_commands()[1]
    assert "pytest" in test_cmd
    assert test_cmd in ci.splitlines()


def test_quickstart_runs_the_main_job():
    assert readme_commands()[0].endswith("psrec compare")


def readme_python() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## From Python", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)\n```", section, flags=re.S)
    return code


def test_from_python_snippet_runs_as_written(ray_session, tmp_path, monkeypatch, capsys):
    """The README's "From Python" snippet, verbatim: under 10 lines, and it trains on PS."""
    code = readme_python()
    assert len(code.splitlines()) < 10
    monkeypatch.chdir(tmp_path)  # its run directory lands under ./runs
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    res, again = scope["res"], scope["again"]
    assert res.mode == "ps-async" and 0.5 < res.auc < 1 and res.samples_per_s > 0
    assert 0 < res.comm_fraction < 1 and res.phases["pull"] > 0
    assert again.auc == res.auc and again.path == res.path
    assert "AUC" in capsys.readouterr().out
