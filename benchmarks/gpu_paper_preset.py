"""Training throughput of the ``paper`` preset on a GPU: iterations/s, GPU memory, loss share.

For each network at the paper's configuration: batch 4, 128³ patches, 2 → 2 channels, AdamW
2e-4 / 1e-5, mixed precision (autocast + GradScaler, as the reference code), ``--iters`` timed
steps after ``--warmup`` steps on random inputs with a 2 % foreground target. The share of the
step spent in the loss is the step time with the real loss minus the step time with a trivial
loss (``logits.float().mean()``), over the former, both measured in the same run.

    python benchmarks/gpu_paper_preset.py                     # every built-in network, l1dfl
    python benchmarks/gpu_paper_preset.py --loss dfl --nets attunet
    python benchmarks/gpu_paper_preset.py --device cpu --patch 32 --batch 1 --iters 2 --warmup 1   # smoke test

Prints the device's name with the figures; record them in benchmarks/RESULTS.md with it.
"""

from __future__ import annotations

import argparse
import statistics
import time


def step_times(net, loss_fn, x, y, iters: int, warmup: int, amp: bool, device) -> list[float]:
    import torch

    opt = torch.optim.AdamW(net.parameters(), lr=2e-4, weight_decay=1e-5)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")
    times = []
    for i in range(warmup + iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            logits = net(x)
        value = loss_fn(logits.float(), y)
        scaler.scale(value).backward()
        scaler.step(opt)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="attunet,segresnet,unet,unetr")
    parser.add_argument("--loss", default="l1dfl")
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--no-amp", action="store_true", help="full precision instead of the paper's AMP")
    args = parser.parse_args()

    import torch

    from lossbench.registry import load_registry

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible; use --device cpu for a smoke test")
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    reg = load_registry()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    amp = not args.no_amp
    print(f"device: {name}; torch {torch.__version__}; batch {args.batch}, {args.patch}³, AMP {amp}; "
          f"median of {args.iters} steps after {args.warmup}")
    print(f"{'network':10} | {'loss':6} | {'it/s':>7} | {'step ms':>8} | {'peak GiB':>8} | {'loss share':>10}")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((args.batch, 2, *(args.patch,) * 3), generator=gen).to(device)
    y = (torch.rand((args.batch, 1, *(args.patch,) * 3), generator=gen) < 0.02).long().to(device)
    loss = reg.build("loss", args.loss).to(device)
    for net_name in [n.strip() for n in args.nets.split(",") if n.strip()]:
        params = {"img_size": args.patch} if net_name == "unetr" else {}
        component = reg.get("network", net_name)
        component.check(params, patch=(args.patch,) * 3, spatial_dims=3, batch_size=args.batch)
        torch.manual_seed(0)
        net = component.build(params, in_channels=2, out_channels=2, spatial_dims=3).to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        real = statistics.median(step_times(net, loss, x, y, args.iters, args.warmup, amp, device))
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        trivial = statistics.median(step_times(net, lambda logits, target: logits.mean(), x, y, args.iters,
                                               args.warmup, amp, device))
        share = max(real - trivial, 0.0) / real
        print(f"{net_name:10} | {args.loss:6} | {1 / real:7.2f} | {real * 1e3:8.1f} | {peak:8.2f} | {share:10.1%}")
        del net
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
