"""bench/load/run's tables, from its runs file (one tab-separated line per wrk run: name,
baseline name or -, wrk output, samples CSV or -, CSV to write or -, load start and end as
unix times, 1-minute load average at start and at end). Writes each sampled run's RSS over
time as CSV (seconds from the start of the load, RSS KiB, established connections).
Usage: report.py RUNS OUT_DIR CONNECTIONS SECONDS TIMEOUT"""
import csv
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import wrk  # noqa: E402  (bench/wrk.py)

runs_path, out_dir, conns, secs, timeout = sys.argv[1:6]
runs = []
for line in open(runs_path):
    if not line.strip():
        continue
    name, baseline, wrk_out, samples, csv_out, t0, t1, load0, load1 = line.rstrip("\n").split("\t")
    runs.append({
        "name": name, "baseline": baseline, "wrk": wrk.parse(open(wrk_out).read()),
        "samples": samples, "csv": csv_out, "t0": float(t0), "t1": float(t1),
        "load": (load0, load1),
    })
by_name = {r["name"]: r for r in runs}


def mib(kib):
    return "" if kib is None else f"{kib / 1024:.1f}"


def read_samples(path):
    with open(path) as f:
        return [(float(r["unix_time"]), int(r["rss_kib"]), int(r["established"]))
                for r in csv.DictReader(f)]


print(f"wrk -t2 -c{conns} -d{secs}s --timeout {timeout} --latency; the servers, nginx and wrk "
      "share the same 2 cores.\n")
print("| target | requests/s | vs baseline | requests | socket errors | non-2xx/3xx | p50 ms "
      "| p99 ms | max ms | load avg |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for r in runs:
    w = r["wrk"]
    base = by_name.get(r["baseline"])
    vs = f"{w['rps'] / base['wrk']['rps']:.2f}x {r['baseline']}" if base else "(baseline)"
    sock = w["connect"] + w["read"] + w["write"] + w["timeout"]
    sock_text = str(sock) if not sock else (
        f"{sock} (connect {w['connect']}, read {w['read']}, write {w['write']}, timeout {w['timeout']})")
    print(f"| {r['name']} | {w['rps']:,.0f} | {vs} | {w['requests']:,} | {sock_text} | {w['non2xx']} "
          f"| {w['p50']:.2f} | {w['p99']:.2f} | {w['max']:,.0f} | {r['load'][0]} → {r['load'][1]} |")

sampled = [r for r in runs if r["samples"] != "-"]
if sampled:
    print("\nResident set (VmRSS, MiB, sampled every second) and established connections on the "
          "server's port while the load runs:\n")
    print("| process under load | connections held (least seen) | before | +10 s | +30 s | +60 s "
          "| end | max | +10 s → end | after |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
verdicts = []
for r in sampled:
    samples = read_samples(r["samples"])
    t0, t1 = r["t0"], r["t1"]
    before = [s for s in samples if s[0] < t0]
    during = [s for s in samples if t0 <= s[0] <= t1]
    after = [s for s in samples if s[0] > t1 + 1.5]

    def at(offset):
        # The last sample at or before t0 + offset, if the load was still running then.
        if t0 + offset > t1 + 0.5:
            return None
        hits = [s for s in during if s[0] <= t0 + offset + 0.5]
        return hits[-1][1] if hits else None

    steady = [s[2] for s in during if t0 + 3 <= s[0] <= t1 - 1]
    # The least seen. /proc/net/tcp is read in pieces while other sockets on the machine come
    # and go, so one sample can count an entry twice (seen: 1,056 of 1,000); what proves that
    # no connection was dropped is wrk's read errors (a closed keep-alive connection is one).
    held = f"{min(steady):,}" if steady else ""
    peak = max((s[1] for s in during), default=None)
    start10, end = at(10), (during[-1][1] if during else None)
    growth = "" if start10 is None or end is None else f"{(end - start10) / 1024:+.1f}"
    print(f"| {r['name']} | {held} | {mib(before[-1][1] if before else None)} | {mib(start10)} "
          f"| {mib(at(30))} | {mib(at(60))} | {mib(end)} | {mib(peak)} | {growth} "
          f"| {mib(after[0][1] if after else None)} |")
    if r["csv"] != "-":
        with open(os.path.join(out_dir, r["csv"]), "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["seconds", "rss_kib", "established"])
            for t, rss, est in samples:
                out.writerow([f"{t - t0:.1f}", rss, est])
    w = r["wrk"]
    errors = w["connect"] + w["read"] + w["write"] + w["timeout"] + w["non2xx"]
    verdicts.append(f"{r['name']}: {w['requests']:,} requests, "
                    f"{'zero errors' if errors == 0 else f'{errors} ERRORS'}"
                    f"{'' if not steady or min(steady) >= int(conns) else f', held only {min(steady)} connections'}"
                    f", peak RSS {mib(peak)} MiB")
if verdicts:
    print("\n" + "\n".join(verdicts))
    if sampled:
        print(f"RSS over time: {', '.join(os.path.join(out_dir, r['csv']) for r in sampled if r['csv'] != '-')}")
if any(math.isnan(r["wrk"]["max"]) for r in runs):
    print("(max latency missing from a wrk report)")
