"""The benchmark scripts run and report what they measured (speed itself is not asserted here)."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fmnist.ledger import RunFacts
from fmnist.tracking import Tracker
from tests.conftest import store

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def bench(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_throughput_compares_fmnist_with_the_dataloader_reference(tmp_path, real_data_root):
    bench("throughput.py", "--steps", "1", "--repeats", "1", "--models", "mlp", "--out", str(tmp_path), cwd=tmp_path)
    text = (tmp_path / "throughput.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| mlp |")]
    assert len(rows) == 4 and "reference, DataLoader num_workers=2" in text and "fmnist, bf16" in text
    ratios = [float(cell.strip().rstrip("x")) for row in rows for cell in row.split("|")[4:5]]
    assert max(ratios[:2]) == 1.0  # the faster reference is the unit
    assert "CPU cores" in text and "python benchmarks/throughput.py" in text
    assert f"processor class: {torch.backends.cpu.get_cpu_capability()}, " in text  # every figure names its processor class


@pytest.mark.slow
def test_throughput_names_forced_code_paths_and_measures_resnet18_both_ways(tmp_path, real_data_root):
    env = os.environ | {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    done = subprocess.run([sys.executable, str(BENCH / "throughput.py"), "--steps", "1", "--repeats", "1", "--models", "resnet18",
                           "--out", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    text = (tmp_path / "throughput.md").read_text()
    assert "processor class: AVX2, bf16 emulated (code paths held there by ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2" in text
    assert "`ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/throughput.py" in text
    assert "| resnet18 | fmnist, fp32, every tap (trim_taps=false) |" in text and "| resnet18 | fmnist, fp32 + channels-last |" in text


@pytest.mark.slow
def test_overhead_times_a_real_sweep_against_a_bare_process(tmp_path, real_data_root):
    bench("overhead.py", "--jobs", "2", "--train-size", "500", "--rounds", "2", "--out", str(tmp_path), cwd=tmp_path)
    text = (tmp_path / "overhead.md").read_text()
    assert "python -m fmnist.run -m model=mlp seed=0,1 schedule.epochs=1 data.train_size=500" in text
    assert "python benchmarks/overhead.py --jobs 2 --epochs 1 --rounds 2 --train-size 500" in text
    table = [line for line in text.splitlines() if line.startswith("| ") and "round" not in line]
    rounds = [[float(cell.strip(" *")) for cell in line.split("|")[1:-1]] for line in table]
    assert [r[0] for r in rounds] == [1, 2]
    for _, creation, sweep, sweep_epochs, bare, bare_epochs, plain, outside in rounds:
        assert creation > 0 and sweep > bare > 0  # bare_sweep.py exits non-zero if it imported Hydra or MLflow
        assert 0 < sweep_epochs < sweep and 0 < bare_epochs < bare
        assert plain == pytest.approx((sweep - bare) / 2, abs=0.06)  # the table rounds seconds to 0.1
        assert outside == pytest.approx((sweep - sweep_epochs - bare + bare_epochs) / 2, abs=0.11)
    assert "s per job**, the median of 2 round(s)" in text


def test_time_to_accuracy_finds_the_first_epoch_at_each_threshold_and_draws_the_curves(tmp_path):
    uri = store(tmp_path)
    tracker = Tracker(uri, "fast")
    for seed, readings in enumerate([(0.90, 0.93, 0.945), (0.91, 0.92, 0.929)]):
        run = tracker.start_run(f"seed {seed}", {"seed": seed, "precision": "bf16"}, RunFacts(processor="AVX512, native bf16"))
        for epoch, acc in enumerate(readings, start=1):
            run.log_metrics({"test/acc": acc}, step=epoch)
        run.finish()
    bench("time_to_accuracy.py", "--experiments", "fast", "--tracking-uri", uri, "--out", str(tmp_path), cwd=tmp_path)
    lines = (tmp_path / "time_to_accuracy.md").read_text().splitlines()
    assert "| seed | final test acc % | to 92.86% | to 94.00% | to 95.00% | run wall time |" in lines
    seed0 = next(line for line in lines if line.startswith("| 0 |")).split("|")
    seed1 = next(line for line in lines if line.startswith("| 1 |")).split("|")
    assert "(epoch 2)" in seed0[3] and "(epoch 3)" in seed0[4] and "not reached" in seed0[5]
    assert "(epoch 3)" in seed1[3] and "not reached" in seed1[4]
    assert "(2/2 runs)" in lines[-1] and "(1/2 runs)" in lines[-1] and "(0/2)" in lines[-1] and "nan" not in lines[-1]
    timelines = list(csv.DictReader((tmp_path / "time_to_accuracy.csv").open()))
    assert [(r["seed"], r["epoch"], r["test acc"]) for r in timelines][:3] == [("0", "1", "0.9000"), ("0", "2", "0.9300"), ("0", "3", "0.9450")]
    assert {(r["preset"], r["processor class"], r["precision"]) for r in timelines} == {("fast", "AVX512, native bf16", "bf16")}
    bench("time_to_accuracy.py", "--figure", str(tmp_path / "curves.png"), "--timelines", str(tmp_path / "time_to_accuracy.csv"), cwd=tmp_path)
    assert (tmp_path / "curves.png").stat().st_size > 10_000


@pytest.mark.slow
def test_time_to_accuracy_can_train_the_preset_itself(tmp_path, real_data_root):
    bench(
        "time_to_accuracy.py", "--run", "fast", "--seeds", "3", "--out", str(tmp_path),
        "model.channels=[8,16]", "data.train_size=1000", "schedule.epochs=3", f"data.root={real_data_root}", cwd=tmp_path,
    )
    text = (tmp_path / "time_to_accuracy_fast.md").read_text()
    assert "--run fast --seeds 3 model.channels=[8,16]" in text  # the changed preset is written next to the figures
    assert "| 3 |" in text and "seed 3:" in text and "not reached" in text


def test_flop_rate_counts_the_models_and_reads_each_throughput_files_class(tmp_path):
    sample = tmp_path / "throughput.md"
    sample.write_text(
        "# Training and inference throughput\n\nMade by `x` on 2 CPU cores (CPU; processor class: AVX2, bf16 emulated), no GPU.\n\n"
        "| model | loop | train img/s | ratio | inference img/s | ratio |\n|---|---|---:|---:|---:|---:|\n"
        "| vgg | fmnist, fp32 | 1,000 | 1.00x | 2,000 | 1.00x |\n| vgg | fmnist, bf16 + channels-last | 50 | 0.05x | 90 | 0.05x |\n"
        "| resnet18 | fmnist, fp32 | 500 | 1.00x | 2,000 | 1.00x |\n"
    )
    bench("flop_rate.py", str(sample), "--out", str(tmp_path / "rate.md"), cwd=tmp_path)
    text = (tmp_path / "rate.md").read_text()
    sys.path.insert(0, str(BENCH))
    from flop_rate import train_flops_per_image

    vgg, resnet = train_flops_per_image("vgg"), train_flops_per_image("resnet18")
    assert 0.1e9 < vgg < resnet < 0.3e9  # both ~0.2 GFLOP a training image at 28 px
    rows = [line for line in text.splitlines() if "| AVX2, bf16 emulated |" in line]
    assert len(rows) == 2 and not any("bf16 +" in r for r in rows)  # only fp32 loops are rated
    expected = 500 * resnet / (1000 * vgg)
    assert rows[1].endswith(f"| {expected:.2f}x |") and rows[0].endswith("| 1.00x |")


@pytest.mark.slow
def test_compile_times_eager_and_compiled_runs_of_a_preset_in_turns(tmp_path, real_data_root):
    bench("compile.py", "--preset", "tiny", "--epochs", "2", "--rounds", "1", "--out", str(tmp_path), cwd=tmp_path)
    text = (tmp_path / "compile_tiny.md").read_text()
    assert "python benchmarks/compile.py --preset tiny --epochs 2 --rounds 1 --out" in text and "processor class: " in text
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith(("| eager |", "| compiled |"))]
    assert [(way.strip(), round_.strip()) for way, round_, *_ in rows] == [("eager", "1"), ("compiled", "1")]
    for _, _, whole, first, later in rows:
        assert float(whole) > float(first) > 0 and float(later) > 0  # the command holds its epochs; one later epoch each
    assert "compiled / eager: " in text
    refused = subprocess.run([sys.executable, str(BENCH / "compile.py"), "--epochs", "1"], capture_output=True, text=True, cwd=tmp_path)
    assert refused.returncode == 2 and "--epochs must be >= 2" in refused.stderr
