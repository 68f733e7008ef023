"""CI must not pass with skipped real-service tests (.ci/run sets CI; the ci_guard plugin fails the run)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("ci", "code"), [("1", 1), ("", 0)])
def test_a_skip_fails_the_run_only_under_ci(pytester, monkeypatch, ci, code):
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest('pytest_plugins = ["tests.harness.ci_guard"]\n')
    pytester.makepyfile("import pytest\n\ndef test_needs_docker():\n    pytest.skip('no engine')\n")
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    assert result.ret == code
    if ci:
        result.stdout.fnmatch_lines(["*CI: 1 test(s) skipped*test_needs_docker*"])


def test_ci_run_sets_ci():
    script = (ROOT / ".ci" / "run").read_text()
    assert "export CI=1" in script
    assert "scripts/test.sh" in script
