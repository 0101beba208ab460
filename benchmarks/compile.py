"""Does `compile=true` (torch.compile) pay for itself in a preset's run? Eager and compiled runs take turns.

Each way runs the preset as a whole command for a few epochs (`schedule.epochs`), into a fresh store,
with a different seed each round so that no run is skipped as a duplicate, and each compiled run with
an empty compile cache (TORCHINDUCTOR_CACHE_DIR), as a first run would; the figures are the command's
wall time and each epoch's seconds as the run printed them (validation included). The first epoch
carries the compile; later epochs show the steady pace.

    python benchmarks/compile.py --preset fast_fp32 --epochs 2 --rounds 2
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine

EPOCH_LINE = re.compile(r"^epoch \d+/\d+ .* ([0-9.]+)s$", re.MULTILINE)
WAYS = {"eager": "compile=false", "compiled": "compile=true"}


def one_run(preset: str, want: int, way: str, seed: int, work: Path) -> tuple[float, list[float]]:
    """(whole command seconds, seconds of each of its `want` epochs) of one run of the preset."""
    command = [sys.executable, "-m", "fmnist.run", f"experiment={preset}", f"schedule.epochs={want}", WAYS[way], f"seed={seed}",
               "progress=false", f"tracking.uri=sqlite:///{work / 'mlflow.db'}", f"hydra.run.dir={work / 'out'}"]
    env = os.environ | {"TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(dir=work)}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=work, env=env)
    whole = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"the {way} run failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    epochs = [float(seconds) for seconds in EPOCH_LINE.findall(done.stderr)]
    if len(epochs) != want:
        sys.exit(f"the {way} run printed {len(epochs)} epochs, not {want} (skipped as done before?):\n{done.stderr[-2000:]}")
    return whole, epochs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="fast_fp32")
    parser.add_argument("--epochs", type=int, default=2, help="epochs a run (at least 2: the first one carries the compile)")
    parser.add_argument("--rounds", type=int, default=2, help="each way runs once a round, the two taking turns")
    parser.add_argument("--out", type=Path, default=machine.RESULTS, help="folder for compile_<preset>.md (default: results/bench)")
    args = parser.parse_args(argv)
    if args.epochs < 2 or args.rounds < 1:
        parser.error("--epochs must be >= 2 and --rounds >= 1")
    rows, later = [], {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            for way in WAYS:
                whole, epochs = one_run(args.preset, args.epochs, way, 100 + round_, Path(folder))
                later[way] += epochs[1:]
                rows.append(f"| {way} | {round_ + 1} | {whole:.0f} | {epochs[0]:.1f} | {' / '.join(f'{s:.1f}' for s in epochs[1:])} |")
    pace = {way: statistics.median(seconds) for way, seconds in later.items()}
    body = "\n".join([
        f"`experiment={args.preset} schedule.epochs={args.epochs}`, one whole command a run, eager and compiled taking turns "
        f"({args.rounds} rounds, seeds 100 on). Seconds as each run printed them (an epoch includes its validation).",
        "",
        "| way | round | whole command (s) | epoch 1 (s) | later epochs (s) |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
        f"Median of the later epochs: eager {pace['eager']:.1f} s, compiled {pace['compiled']:.1f} s "
        f"(compiled / eager: {pace['compiled'] / pace['eager']:.2f}x).",
    ])
    command = machine.command_line(f"python benchmarks/compile.py --preset {args.preset} --epochs {args.epochs} --rounds {args.rounds}", args.out)
    machine.write(args.out / f"compile_{args.preset}.md", f"torch.compile against eager: experiment={args.preset}", command, body)


if __name__ == "__main__":
    main()
