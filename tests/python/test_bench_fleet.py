"""scripts/bench_fleet.py for a few seconds: three replicas of the built-in model behind SMG,
driven by epas-loadtest at ratios 0 and 0.5, one replica SIGKILLed halfway. The table it prints
must show the fleet serving through the kill: the killed replica serves nothing after it, the
others take the rest, and only what was in flight on it fails."""

import re
import subprocess
import sys

from epas_testing import ROOT, require_tool

ROW = re.compile(r"^\| (\d)( \(killed\))? \| (\d+) \| (\d+) \| (\S+) \| (\S+) \|$")
TOTALS = re.compile(r"requests sent (\d+), completed (\d+), failed (\d+)")


def test_bench_fleet_serves_through_a_sigkill():
    require_tool("smg")
    concurrency = 4
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_fleet.py"), "--duration", "8",
         "--concurrency", str(concurrency)],
        capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [m.groups() for m in map(ROW.match, out.stdout.splitlines()) if m]
    assert [r[0] for r in rows] == ["1", "2", "3"], out.stdout
    before = [int(r[2]) for r in rows]
    after = [int(r[3]) for r in rows]
    assert rows[0][1] and after[0] == 0, out.stdout
    assert before[0] > 0 and all(a > 0 for a in after[1:]), out.stdout
    sent, completed, failed = map(int, TOTALS.search(out.stdout).groups())
    assert completed > 0 and failed <= concurrency, out.stdout
    assert completed + failed == sent, out.stdout
