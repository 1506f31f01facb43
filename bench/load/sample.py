"""Once a second: a process's resident set (VmRSS, /proc/PID/status) and how many established
TCP connections it holds on its listening port (/proc/net/tcp{,6}, local port = PORT).
Usage: sample.py PID PORT CSV. Runs until the process exits or this one gets SIGTERM."""
import signal
import sys
import time

pid, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ESTABLISHED = "01"


def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise ProcessLookupError(pid)


def established():
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == ESTABLISHED and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        count += 1
        except FileNotFoundError:
            pass
    return count


signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
with open(out, "w", buffering=1) as f:
    f.write("unix_time,rss_kib,established\n")
    due = time.time()
    while True:
        try:
            rss = rss_kib()
        except (FileNotFoundError, ProcessLookupError):
            break
        f.write(f"{time.time():.3f},{rss},{established()}\n")
        due += 1.0
        time.sleep(max(0.0, due - time.time()))
