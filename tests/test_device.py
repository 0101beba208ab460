"""Device and precision: auto picks bf16 only where it is native and pays, on every answer of the CPU check."""

import os
import subprocess
import sys

import pytest
import torch

from fmnist.device import BF16_ENV, CpuFacts, choose_precision, cpu_facts, cpu_vendor, pick_device
from fmnist.errors import ConfigError

CPU = torch.device("cpu")
NATIVE, EMULATED = CpuFacts("AVX512", True), CpuFacts("AVX2", False)
NO_AMX = CpuFacts("AVX512", True, slow_bf16=True)  # an Intel CPU with AVX-512-BF16 and no AMX (or its AMX hidden by a VM)


def test_auto_is_bf16_where_the_cpu_has_it_natively_and_fp32_elsewhere():
    precision, why = choose_precision("auto", CPU, NATIVE)
    assert precision == "bf16" and "AVX512" in why and "native bfloat16" in why
    precision, why = choose_precision("auto", CPU, EMULATED)
    assert precision == "fp32" and "(AVX2) has no native bfloat16" in why


def test_native_bf16_without_amx_on_intel_is_its_own_class_and_auto_gives_it_fp32():
    precision, why = choose_precision("auto", CPU, NO_AMX)
    assert precision == "fp32" and "AVX-512-BF16 but no AMX" in why and "results/bench/no-amx/throughput.md" in why
    assert NO_AMX.describe() == "AVX512, native bf16 without AMX" and NATIVE.describe() == "AVX512, native bf16"
    precision, why = choose_precision("bf16", CPU, NO_AMX)
    assert precision == "bf16" and "slower than fp32" in why and "precision=auto picks fp32" in why


def test_explicit_precisions_stay_and_emulated_bf16_says_so():
    assert choose_precision("fp32", CPU, NATIVE) == ("fp32", "")
    assert choose_precision("bf16", CPU, NATIVE) == ("bf16", "")
    precision, why = choose_precision("bf16", CPU, EMULATED)
    assert precision == "bf16" and "emulated and slower than fp32" in why and "precision=auto picks fp32" in why


@pytest.mark.parametrize("value,native", [("1", True), ("0", False)])
def test_the_environment_can_give_either_answer(monkeypatch, value, native):
    monkeypatch.setenv(BF16_ENV, value)
    facts = cpu_facts()
    assert facts.native_bf16 is native and facts.capability == torch.backends.cpu.get_cpu_capability()
    assert facts.describe().endswith("native bf16" if native else "bf16 emulated")


def test_a_run_on_capped_kernels_says_so_in_its_processor_class():
    capped = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    said = subprocess.run([sys.executable, "-c", "from fmnist.device import cpu_facts; print(cpu_facts().describe())"],
                          env=capped, capture_output=True, text=True, check=True).stdout.strip()
    assert said.startswith("AVX2, bf16 emulated") and said.endswith("(kernels capped: ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2)")


def test_without_an_override_the_answer_follows_the_hardware_and_onednn(monkeypatch):
    monkeypatch.delenv(BF16_ENV, raising=False)
    amx = torch.cpu._is_amx_tile_supported()
    native = (torch.cpu._is_avx512_bf16_supported() or amx) and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    facts = cpu_facts()
    assert facts.native_bf16 == native and facts.slow_bf16 == (native and not amx and cpu_vendor() == "GenuineIntel")


def test_the_cpu_vendor_is_read_from_proc_cpuinfo():
    if not os.path.exists("/proc/cpuinfo"):
        pytest.skip("no /proc/cpuinfo here")
    with open("/proc/cpuinfo") as info:
        said = {line.split(":", 1)[1].strip() for line in info if line.startswith("vendor_id")}
    assert cpu_vendor() in said | ({""} if not said else set())


def test_a_missing_device_is_one_sentence():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="device=cuda was asked for but none is available here"):
        pick_device("cuda")
    assert pick_device("auto") == CPU
