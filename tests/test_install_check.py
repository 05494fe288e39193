"""The conftest check: without the editable install (or with alignkit installed from another checkout) pytest stops
with one clear line instead of a wall of import errors."""

import importlib.util
import subprocess
import sys

from conftest import ROOT, install_problem


def test_this_checkout_is_installed():
    assert install_problem() is None


def test_a_missing_editable_install_is_one_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "alignkit.plugins" else real(name, *a)
    )
    problem = install_problem()
    assert problem.startswith("alignkit.plugins does not import") and f"pip install -e {ROOT}" in problem
    assert "\n" not in problem


def test_pytest_stops_on_another_checkout_with_one_line(tmp_path):
    """A copy of the test set outside this checkout: alignkit resolves here, not there, so pytest refuses to run."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (tmp_path / "tests" / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and f"not from {tmp_path / 'alignkit'}" in errors[0] and "pip install -e" in errors[0]
