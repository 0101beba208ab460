"""Which device a run trains on, and in which precision: what the hardware does natively, said in one line.

bf16 halves the work of convolutions and matmuls where the processor has bfloat16 instructions (a CUDA
GPU with bf16, a CPU with AVX-512-BF16 or AMX); elsewhere it is emulated and several times slower than
fp32. `precision=auto` picks bf16 only where it is native and pays: an Intel CPU with AVX-512-BF16 but no
AMX (or one whose AMX a virtual machine hides) has native bf16 convolutions that train slower than fp32
(results/bench/no-amx/throughput.md), so it gets fp32 too. The checks are functions of their own so a
test can give either answer (`CpuFacts`), and `FMNIST_CPU_BF16=0|1` overrides the CPU's for a whole
process (a test's subprocess, or a user who knows better).
"""

import os
from dataclasses import dataclass

import torch

from fmnist.errors import ConfigError

BF16_ENV = "FMNIST_CPU_BF16"
CAPS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")  # how a newer CPU is held to an older class's kernels


def pick_device(requested: str) -> torch.device:
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if requested == "auto":
        return torch.device(next(name for name, ok in available.items() if ok))
    if not available[requested]:
        raise ConfigError(f"device={requested} was asked for but none is available here; use device=auto or device=cpu")
    return torch.device(requested)


@dataclass(frozen=True)
class CpuFacts:
    """What this CPU offers torch: its vector capability and whether bfloat16 is native (not emulated)."""

    capability: str  # torch.backends.cpu.get_cpu_capability(): AVX512, AVX2, ...
    native_bf16: bool
    capped: str = ""  # the variables holding the kernels below the hardware (an older class emulated on a newer CPU)
    slow_bf16: bool = False  # native, yet slower than fp32: AVX-512-BF16 without AMX on an Intel CPU

    def describe(self) -> str:
        bf16 = "bf16 emulated" if not self.native_bf16 else "native bf16 without AMX" if self.slow_bf16 else "native bf16"
        return f"{self.capability}, {bf16}" + (f" (kernels capped: {self.capped})" if self.capped else "")


def cpu_facts() -> CpuFacts:
    capability = torch.backends.cpu.get_cpu_capability()
    capped = " ".join(f"{name}={os.environ[name]}" for name in CAPS if os.environ.get(name))
    forced = os.environ.get(BF16_ENV)
    if forced in ("0", "1"):
        return CpuFacts(capability, forced == "1", capped)
    try:
        amx = torch.cpu._is_amx_tile_supported()
        hardware = torch.cpu._is_avx512_bf16_supported() or amx
        # oneDNN may be held below the hardware (ONEDNN_MAX_CPU_ISA); then it emulates bf16 too.
        allowed = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without these checks or without oneDNN
        hardware = allowed = amx = False
    native = bool(hardware and allowed)
    return CpuFacts(capability, native, capped, slow_bf16=native and not amx and cpu_vendor() == "GenuineIntel")


def cpu_vendor() -> str:
    """The CPU's maker as Linux names it (GenuineIntel, AuthenticAMD); '' where /proc/cpuinfo does not say."""
    try:
        with open("/proc/cpuinfo") as info:
            return next((line.split(":", 1)[1].strip() for line in info if line.startswith("vendor_id")), "")
    except OSError:
        return ""


@dataclass(frozen=True)
class Hardware:
    """Where a run trains and in what, settled once: its device, its precision, the processor class, and why (one line)."""

    device: str  # cpu, cuda, mps
    precision: str  # fp32 or bf16
    processor: str  # the CPU's class (vector code, bf16 native or emulated) or the GPU's name
    why: str = ""  # said at the start where `auto` chose, or where the choice is a poor one here


def settle(device: str, precision: str) -> Hardware:
    """The device and precision a run asks for, as they will be: ConfigError where they cannot be."""
    where = pick_device(device)
    chosen, why = choose_precision(precision, where)
    processor = torch.cuda.get_device_name(where) if where.type == "cuda" else cpu_facts().describe() if where.type == "cpu" else where.type
    if why and precision == "auto":
        why = f"precision=auto: {chosen}, because {why}"
    elif why:
        why = f"precision={precision}: {why}"
    return Hardware(where.type, chosen, processor, why)


def choose_precision(requested: str, device: torch.device, cpu: CpuFacts | None = None) -> tuple[str, str]:
    """(precision, why): `auto` becomes bf16 where the device does it natively, else fp32; bf16 is checked."""
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
        where = torch.cuda.get_device_name(device)
        if requested == "bf16" and not native:
            raise ConfigError(f"precision=bf16: {where} has no bfloat16 support; use precision=fp32 or precision=auto")
        if requested != "auto":
            return requested, ""
        return ("bf16", f"{where} does bfloat16 natively") if native else ("fp32", f"{where} has no bfloat16")
    if device.type != "cpu":
        return ("fp32" if requested == "auto" else requested), ("bf16 is not checked on this device" if requested == "auto" else "")
    cpu = cpu or cpu_facts()
    if requested == "bf16" and not cpu.native_bf16:
        return "bf16", "this CPU has no native bfloat16 instructions, so bf16 is emulated and slower than fp32 here (precision=auto picks fp32)"
    if requested == "bf16" and cpu.slow_bf16:
        return "bf16", "this CPU has AVX-512-BF16 but no AMX, where bf16 trains slower than fp32 (precision=auto picks fp32)"
    if requested != "auto":
        return requested, ""
    if cpu.slow_bf16:
        return "fp32", (f"this CPU ({cpu.capability}) has AVX-512-BF16 but no AMX, where bf16 convolutions train slower than "
                        "fp32 (results/bench/no-amx/throughput.md)")
    if cpu.native_bf16:
        return "bf16", f"this CPU ({cpu.capability}) has native bfloat16 instructions (AVX-512-BF16 or AMX)"
    return "fp32", f"this CPU ({cpu.capability}) has no native bfloat16 instructions, where bf16 would be several times slower"
