"""Fuzz of the native ops (issue 16): ``ops_fuzz_worker.py`` runs hypothesis over dtypes,
shapes, centres (NaN, inf, huge), patch sizes, thread counts, canvas sizes and out buffers
in a subprocess, so a segfault or an abort fails this test instead of killing pytest."""

import signal
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("ops_fuzz_worker.py")
EXAMPLES = 120  # per op; about 30 s on 2 busy cores, start-up included


def test_every_hostile_call_returns_the_reference_or_raises_a_clear_error():
    result = subprocess.run([sys.executable, str(WORKER), str(EXAMPLES)], capture_output=True, text=True, timeout=600)
    if result.returncode < 0:
        raise AssertionError(
            f"the ops crashed the process ({signal.Signals(-result.returncode).name}):\n{result.stderr[-4000:]}"
        )
    assert result.returncode == 0, result.stdout + result.stderr[-6000:]
    outcomes = {line.split()[0]: dict(kv.split("=") for kv in line.split()[1:]) for line in result.stdout.splitlines()}
    assert set(outcomes) == {"occlude", "splat"}, result.stdout
    for op, counts in outcomes.items():
        assert sum(map(int, counts.values())) == EXAMPLES, (op, counts)
        # not vacuous: a good share of the calls return a result that was compared with the reference
        assert int(counts["result"]) >= EXAMPLES // 4 and int(counts["ValueError"]) >= EXAMPLES // 10, (op, counts)
