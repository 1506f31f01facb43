"""Reads wrk's --latency report. As a script: wrk.py NAME FILE prints one tab-separated row
(name, requests/s, p50 ms, p99 ms, non-2xx/3xx, socket errors) for bench/gateway/run."""
import re
import sys

UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def ms(value):
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * UNIT_MS[unit]


def parse(text):
    """The figures of one wrk run; a missing figure (wrk failed) raises ValueError."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not rps:
        raise ValueError("no Requests/sec in wrk's output:\n" + text)
    total = re.search(r"(\d+) requests in ([\d.]+\w+)", text)
    latency = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    connect, read, write, timeout = (int(g) for g in errors.groups()) if errors else (0, 0, 0, 0)
    return {
        "rps": float(rps.group(1)),
        "requests": int(total.group(1)) if total else 0,
        "p50": ms(re.search(r"\s50%\s+(\S+)", text).group(1)),
        "p99": ms(re.search(r"\s99%\s+(\S+)", text).group(1)),
        "max": ms(latency.group(3)) if latency else float("nan"),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "connect": connect,
        "read": read,
        "write": write,
        "timeout": timeout,
        "errors_line": errors.group(0) if errors else "",
    }


if __name__ == "__main__":
    name, path = sys.argv[1:3]
    r = parse(open(path).read())
    print(f"{name}\t{r['rps']:.0f}\t{r['p50']:.3f}\t{r['p99']:.3f}\t{r['non2xx']}\t{r['errors_line']}")
