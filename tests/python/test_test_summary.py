"""scripts/test_summary.py, the last line of scripts/test.sh, on real cargo and pytest output
shapes: counts summed over every test binary, failures and missing results reported as such."""

import subprocess
import sys

from epas_testing import ROOT

SCRIPT = ROOT / "scripts" / "test_summary.py"

CARGO = """\
     Running unittests src/lib.rs (target/release/deps/epas_model-1)
test result: ok. 14 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.12s
   Doc-tests epas_model
test result: \x1b[32mok\x1b[0m. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out;\
 finished in 0.01s
"""

CARGO_FAILED = CARGO + (
    "test result: FAILED. 4 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out;"
    " finished in 1.00s\n"
)

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="{e}"
failures="{f}" skipped="{s}" tests="{t}" time="1.0"></testsuite></testsuites>"""


def run(tmp_path, cargo, junit, gpu="0", allow=False):
    log = tmp_path / "cargo.log"
    log.write_text(cargo)
    xml = tmp_path / "pytest.xml"
    if junit is not None:
        xml.write_text(junit)
    env = {"PATH": "/usr/bin:/bin"}
    if allow:
        env["EPAS_TEST_ALLOW_SKIPS"] = "1"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(log), str(xml), gpu],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout + done.stderr
    return done.returncode, lines[0]


def test_all_passed(tmp_path):
    rc, line = run(tmp_path, CARGO, JUNIT.format(e=0, f=0, s=0, t=31))
    assert rc == 0
    assert line == (
        "tests ok: Rust 17 passed, 0 failed, 2 ignored; Python 31 passed, 0 failed, 0 skipped;"
        " gpu-check on cpu ok"
    )


def test_failures_and_errors_fail(tmp_path):
    rc, line = run(tmp_path, CARGO_FAILED, JUNIT.format(e=1, f=2, s=0, t=31))
    assert rc == 1
    assert line.startswith("tests FAILED: Rust 21 passed, 1 failed, 2 ignored;")
    assert "Python 28 passed, 3 failed, 0 skipped" in line


def test_skips_fail_unless_allowed_and_named(tmp_path):
    junit = JUNIT.format(e=0, f=0, s=12, t=31)
    rc, line = run(tmp_path, CARGO, junit)
    assert rc == 1 and line.startswith("tests FAILED:")
    assert "Python 19 passed, 0 failed, 12 skipped" in line
    rc, line = run(tmp_path, CARGO, junit, allow=True)
    assert rc == 0 and line.startswith("tests ok:")
    assert line.endswith("EPAS_TEST_ALLOW_SKIPS=1: tests whose tools are missing were skipped")


def test_missing_results_and_gpu_failure(tmp_path):
    rc, line = run(tmp_path, "error: could not compile `epas`\n", None, gpu="-")
    assert rc == 1
    assert line == (
        "tests FAILED: Rust: no test results; Python: no test results; gpu-check not run"
    )
    rc, line = run(tmp_path, CARGO, JUNIT.format(e=0, f=0, s=0, t=1), gpu="2")
    assert rc == 1 and line.endswith("gpu-check on cpu FAILED (exit 2)")
