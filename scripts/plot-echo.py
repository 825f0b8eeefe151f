#!/usr/bin/env python3
"""Plots docs/echo-bench.tsv (written by scripts/echo-bench.sh) to docs/echo-bench.png:
round trips per second against connections, liveline and tokio, 1 and 16 in flight.

Needs matplotlib (pip install matplotlib)."""
import csv
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
tsv = os.path.join(here, "..", "docs", "echo-bench.tsv")
png = os.path.join(here, "..", "docs", "echo-bench.png")

rows = list(csv.DictReader(open(tsv), delimiter="\t"))
names = {"echo": "liveline (examples/echo)", "tokio_echo": "tokio current_thread"}
fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
for ax, inflight in zip(axes, ["1", "16"]):
    for server, style in [("echo", "o-"), ("tokio_echo", "s--")]:
        pts = [(int(r["conns"]), int(r["rtt_per_s"])) for r in rows
               if r["server"] == server and r["in_flight"] == inflight]
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] / 1000 for p in pts], style, label=names[server])
    ax.set_xscale("log")
    ax.set_xlabel("connections")
    ax.set_ylabel("round trips per second (thousands)")
    ax.set_title(f"36-byte echo, {inflight} in flight per connection")
    ax.grid(True, alpha=0.3)
    ax.legend()
fig.suptitle("Echo round trips on loopback, same load generator, same run (2 vCPU)")
fig.tight_layout()
fig.savefig(png, dpi=110)
print(f"wrote {png}")
