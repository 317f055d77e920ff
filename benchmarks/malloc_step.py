"""Training-step time and peak memory under glibc's default allocator vs lossbench's tuned one.

Baseline: glibc defaults. Tuned: ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` at
16 GiB, which ``lossbench run`` sets by re-executing itself. Each setting runs in a fresh process
(the variables act only at process start) doing ``--steps`` forward+backward+AdamW steps of a
registered network with l1dfl on random inputs; the median step time after one warm-up step
and the process's peak resident memory are compared.

    python benchmarks/malloc_step.py                           # attunet at the paper's size, 96³, batch 2
    python benchmarks/malloc_step.py --net segresnet --patch 64
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, resource, statistics, sys, time, torch
from lossbench.registry import load_registry
net_name, patch, batch, steps, params = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
reg = load_registry()
torch.manual_seed(0)
net = reg.build("network", net_name, params, in_channels=2, out_channels=2, spatial_dims=3)
loss = reg.build("loss", "l1dfl")
opt = torch.optim.AdamW(net.parameters(), lr=2e-4, weight_decay=1e-5)
x = torch.randn(batch, 2, patch, patch, patch)
y = (torch.rand(batch, 1, patch, patch, patch) < 0.02).long()
times = []
for i in range(steps + 1):
    start = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss(net(x), y).backward()
    opt.step()
    times.append(time.perf_counter() - start)
print(json.dumps({"step": statistics.median(times[1:]), "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="attunet")
    parser.add_argument("--patch", type=int, default=96)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--net-params", default="{}", help="JSON network parameters (default: the paper's)")
    args = parser.parse_args()
    from lossbench.cli._run_common import MALLOC_ENV

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    results = {}
    for label, env in (("baseline (glibc defaults)", base_env), ("tuned (16 GiB thresholds)", {**base_env, **MALLOC_ENV})):
        out = subprocess.run([sys.executable, "-c", CHILD, args.net, str(args.patch), str(args.batch), str(args.steps),
                              args.net_params], env=env, capture_output=True, text=True, check=True)
        results[label] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{args.net} {args.net_params}, l1dfl, batch {args.batch}, {args.patch}³, median of {args.steps} steps "
          f"after 1 warm-up; cpus {os.cpu_count()}")
    for label, r in results.items():
        print(f"{label:28} step {r['step']:7.2f} s   peak {r['peak_mib']:7.0f} MiB")
    base, tuned = results.values()
    print(f"tuned / baseline: step time {tuned['step'] / base['step']:.2f}×, peak memory {tuned['peak_mib'] / base['peak_mib']:.2f}×")


if __name__ == "__main__":
    main()
