"""mypy over the packages, held to a committed baseline that may only shrink.

The project started without type checking; the baseline (`tools/mypy-baseline.txt`)
lists the errors it had then, keyed by file, error code and message (not line numbers,
so an edit elsewhere in a file does not move them). `make lint` fails on any error not in
the baseline, and on a baseline entry that is gone: fixed errors are taken out with
`--update` in the same commit, so the file only ever gets shorter.

    python -m tools.mypy_baseline            # check (what make lint runs)
    python -m tools.mypy_baseline --update   # after fixing errors: shrink the baseline
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO / "tools" / "mypy-baseline.txt"
ERROR = re.compile(r"^(?P<path>[^:]+):\d+: error: (?P<message>.*?)\s+\[(?P<code>[a-z-]+)\]$")


def current_errors() -> Counter[str]:
    run = subprocess.run([sys.executable, "-m", "mypy", "--no-pretty",
                          "--no-error-summary", "--show-error-codes"],
                         cwd=REPO, capture_output=True, text=True, check=False)
    if run.returncode not in (0, 1) or run.stderr.strip():
        raise SystemExit(f"mypy did not run: {run.stderr.strip() or run.stdout[-2000:]}")
    keys: Counter[str] = Counter()
    for line in run.stdout.splitlines():
        match = ERROR.match(line)
        if match:
            keys[f"{match['path']}: [{match['code']}] {match['message']}"] += 1
    return keys


def baseline() -> Counter[str]:
    if not BASELINE.exists():
        return Counter()
    return Counter(line for line in BASELINE.read_text().splitlines() if line.strip())


def write(errors: Counter[str]) -> None:
    BASELINE.write_text("".join(f"{key}\n" for key in sorted(errors.elements())))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true",
                        help="take fixed errors out of the baseline (never adds new ones)")
    parser.add_argument("--init", action="store_true",
                        help="write the baseline from scratch (a new project only)")
    args = parser.parse_args()
    now, known = current_errors(), baseline()
    if args.init:
        write(now)
        print(f"baseline: {sum(now.values())} errors")
        return 0
    new, fixed = now - known, known - now
    for key in sorted(new.elements()):
        print(f"new mypy error (not in the baseline): {key}")
    if new:
        print(f"{sum(new.values())} new error(s): fix them; the baseline only shrinks")
        return 1
    if fixed and args.update:
        write(known - fixed)
        print(f"baseline shrank by {sum(fixed.values())} to {sum(now.values())}")
    elif fixed:
        for key in sorted(fixed.elements()):
            print(f"fixed, still in the baseline: {key}")
        print("run `python -m tools.mypy_baseline --update` to take them out")
        return 1
    print(f"mypy: no new errors ({sum(now.values())} in the baseline)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
