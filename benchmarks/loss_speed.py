"""Forward+backward time and peak memory of L1DFL against MONAI's Dice and Dice Focal losses.

Baseline: ``monai.losses.DiceFocalLoss(to_onehot_y=True, softmax=True)`` (the study's DFL),
measured in the same run on the same inputs. Goal: l1dfl within 1.3× of it.

    python benchmarks/loss_speed.py                  # 2 channels, batch 2 and 4, 96³ and 128³
    python benchmarks/loss_speed.py --sizes 64 --batches 2 --repeats 3   # quick look

Time: median of ``--repeats`` timed forward+backward passes after ``--warmup`` untimed ones.
Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above the inputs; on CPU the rise of
the process's peak resident set (VmHWM, reset through /proc/self/clear_refs) above the resident
set before one forward+backward, i.e. what the loss adds on top of its inputs. So that freed
tensors really leave the resident set, the CPU memory passes run after all timings with glibc's
mmap threshold fixed at 128 KiB (``mallopt``) and the heap trimmed; timings use the defaults.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import platform
import statistics
import sys
import time
from pathlib import Path


def _proc_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _step(loss, logits, target):
    x = logits.detach().requires_grad_(True)
    value = loss(x, target)
    value.backward()


def release_freed_memory_to_os() -> None:
    """Fix glibc's mmap threshold at 128 KiB and trim the heap, so frees shrink the RSS."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory_mib(loss, logits, target, device) -> float:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        _step(loss, logits, target)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    release_freed_memory_to_os()
    before = _proc_kib("VmRSS")
    if not _reset_peak():
        return float("nan")
    _step(loss, logits, target)
    return (_proc_kib("VmHWM") - before) / 1024


def time_seconds(loss, logits, target, device, warmup: int, repeats: int) -> float:
    import torch

    def step():
        _step(loss, logits, target)

    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="96,128", help="cubic patch edges, comma separated")
    parser.add_argument("--batches", default="2,4", help="batch sizes, comma separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--foreground", type=float, default=0.02, help="fraction of lesion voxels in the target")
    parser.add_argument("--malloc", default="tuned", choices=("tuned", "default"),
                        help="glibc allocator: 'tuned' as lossbench run uses (16 GiB mmap/trim thresholds) or "
                             "glibc's defaults, under which CPU timings are 2-4x slower and erratic")
    args = parser.parse_args()
    if args.malloc == "tuned" and sys.platform.startswith("linux"):
        from lossbench.cli._run_common import MALLOC_ENV

        if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):  # they act only at process start
            os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})

    import torch
    from monai.losses import DiceFocalLoss, DiceLoss

    from lossbench.registry import load_registry

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    registry = load_registry()
    losses = {
        "monai DiceLoss": DiceLoss(to_onehot_y=True, softmax=True),
        "monai DiceFocalLoss (baseline)": DiceFocalLoss(to_onehot_y=True, softmax=True),
        "lossbench dfl": registry.build("loss", "dfl"),
        "lossbench l1dfl": registry.build("loss", "l1dfl"),
    }
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    try:
        model = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                     if l.startswith("model name")) if device.type == "cpu" else name
    except (OSError, StopIteration):
        model = name
    print(f"device: {device.type} ({model}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cpus {os.cpu_count()}; allocator {args.malloc}; median of {args.repeats} after {args.warmup} warm-up")
    header = f"{'shape':>18} | {'loss':<32} | {'time ms':>9} | {'peak MiB':>9} | {'time / baseline':>15} | {'mem / baseline':>14}"
    print(header)
    print("-" * len(header))
    shapes = [(b, 2, s, s, s) for s in (int(x) for x in args.sizes.split(",")) for b in (int(x) for x in args.batches.split(","))]

    def inputs(shape):
        gen = torch.Generator(device="cpu").manual_seed(0)
        logits = torch.randn(shape, generator=gen).to(device)
        target = (torch.rand((shape[0], 1, *shape[2:]), generator=gen) < args.foreground).long().to(device)
        return logits, target

    times = {}
    for shape in shapes:
        logits, target = inputs(shape)
        for label, loss in losses.items():
            times[shape, label] = time_seconds(loss.to(device), logits, target, device, args.warmup, args.repeats)
        del logits, target
    memory = {}
    for shape in shapes:
        logits, target = inputs(shape)
        for label, loss in losses.items():
            memory[shape, label] = peak_memory_mib(loss, logits, target, device)
        del logits, target
    base = "monai DiceFocalLoss (baseline)"
    for shape in shapes:
        for label in losses:
            t, m = times[shape, label], memory[shape, label]
            print(f"{str(shape):>18} | {label:<32} | {t * 1e3:9.1f} | {m:9.0f} | "
                  f"{t / times[shape, base]:15.2f} | {m / memory[shape, base]:14.2f}")


if __name__ == "__main__":
    main()
