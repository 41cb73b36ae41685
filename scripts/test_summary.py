"""One summary line of a scripts/test.sh run, from cargo's `test result:` lines and pytest's
JUnit XML:

    python3 scripts/test_summary.py CARGO_LOG PYTEST_XML GPU_CHECK_STATUS

Missing inputs (a step that did not get that far) are reported as such, never as zero tests."""

import os
import re
import sys
import xml.etree.ElementTree as ET

RESULT = re.compile(r"test result: (\w+)\. (\d+) passed; (\d+) failed; (\d+) ignored")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def rust_counts(path):
    """(passed, failed, ignored, binaries) summed over every `test result:` line, or None."""
    try:
        text = open(path, encoding="utf-8", errors="replace").read()
    except FileNotFoundError:
        return None
    totals = [0, 0, 0, 0]
    for match in RESULT.finditer(ANSI.sub("", text)):
        for i in range(3):
            totals[i] += int(match.group(i + 2))
        totals[3] += 1
    return tuple(totals) if totals[3] else None


def python_counts(path):
    """(passed, failed, skipped) from pytest's JUnit XML (errors count as failed), or None."""
    try:
        root = ET.parse(path).getroot()
    except (FileNotFoundError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    tests = failed = skipped = 0
    for suite in suites:
        tests += int(suite.get("tests", 0))
        failed += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped += int(suite.get("skipped", 0))
    return tests - failed - skipped, failed, skipped


def summary(cargo_log, pytest_xml, gpu_status, allow_skips):
    ok = True
    rust = rust_counts(cargo_log)
    if rust is None:
        ok = False
        rust_text = "Rust: no test results"
    else:
        passed, failed, ignored, _ = rust
        ok &= failed == 0
        rust_text = f"Rust {passed} passed, {failed} failed, {ignored} ignored"
    py = python_counts(pytest_xml)
    if py is None:
        ok = False
        py_text = "Python: no test results"
    else:
        passed, failed, skipped = py
        ok &= failed == 0 and (skipped == 0 or allow_skips)
        py_text = f"Python {passed} passed, {failed} failed, {skipped} skipped"
    if gpu_status == "0":
        gpu_text = "gpu-check on cpu ok"
    elif gpu_status == "-":
        gpu_text = "gpu-check not run"
        ok = False
    else:
        gpu_text = f"gpu-check on cpu FAILED (exit {gpu_status})"
        ok = False
    parts = [rust_text, py_text, gpu_text]
    if allow_skips:
        parts.append("EPAS_TEST_ALLOW_SKIPS=1: tests whose tools are missing were skipped")
    return ("tests ok: " if ok else "tests FAILED: ") + "; ".join(parts), ok


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    allow = os.environ.get("EPAS_TEST_ALLOW_SKIPS") == "1" and not os.environ.get("CI")
    line, ok = summary(*sys.argv[1:], allow)
    print(line)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
