"""The demo's wall time against its 10-minute budget, on a fresh clone: `make demo` from nothing
(virtual environment and install included), then `make demo` again (which must redo nothing).

    python benchmarks/demo_time.py                 # clones this checkout into a temporary folder
    python benchmarks/demo_time.py --keep /tmp/x   # ... into /tmp/x, kept afterwards
    python benchmarks/demo_time.py --config configs/demo-table2.yaml   # the Table 2 config: 45-minute budget

With `--config`, the clone runs `sightsound run CONFIG` (after `make install`) instead of `make demo`,
against that config's budget (BUDGETS; 10 minutes for any other).

Prints each run's seconds and its ratio to the budget (ratio <= 1.0: within budget), the time the
install took, and the stage timings of the first run from `runs/demo/manifests/run.json`.
The repository's `../shared` (if any) is linked beside the clone, as CI places it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

BUDGET = 600.0  # seconds
BUDGETS = {"configs/demo-table2.yaml": 2700.0}  # the 3-seed run: 45 minutes
ROOT = Path(__file__).resolve().parents[1]


def timed(command: list[str], cwd: Path, log: Path) -> float:
    started = time.time()
    with log.open("w") as out:
        subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=True)
    return time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", help="clone into this folder and keep it")
    parser.add_argument("--config", help="run this pipeline config instead of `make demo`")
    args = parser.parse_args()
    budget = BUDGETS.get(args.config, BUDGET)
    command = ["make", "demo"] if not args.config else [".venv/bin/sightsound", "run", args.config]
    parent = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sightsound-demo-"))
    parent.mkdir(parents=True, exist_ok=True)
    clone = parent / "main"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    shared = ROOT.parent / "shared"
    if shared.exists() and not (parent / "shared").exists():
        (parent / "shared").symlink_to(shared)

    install = timed(["make", "install"], clone, parent / "install.log")
    first = timed(command, clone, parent / "demo-1.log")
    run_dir = next(line.split("→")[-1].split()[0] for line in (parent / "demo-1.log").read_text().splitlines()
                   if line.startswith("run: finished"))
    stages = json.loads((clone / run_dir / "manifests" / "run.json").read_text())["stages"]
    second = timed(command, clone, parent / "demo-2.log")
    rerun = [line.split()[1] for line in (parent / "demo-2.log").read_text().splitlines()
             if line.startswith("run: ") and line.split()[2] == "done"]  # "run: teach done (...)"

    print(f"clone: {clone}")
    print(f"install (venv + pip):        {install:7.1f} s")
    name = " ".join(command[-2:]) if args.config else "make demo"
    print(f"{name}, first run:        {first:7.1f} s   (install included: {install + first:.1f} s)")
    print(f"{name}, second run:       {second:7.1f} s   stages run again: "
          f"{rerun or 'none'}")
    print("first run by stage: " + ", ".join(f"{s['stage']} {s['seconds']:.0f} s" for s in stages))
    print(f"ratio to the {budget:.0f} s budget: first run {first / budget:.3f}, "
          f"with install {(install + first) / budget:.3f}, second run {second / budget:.3f}")


if __name__ == "__main__":
    main()
