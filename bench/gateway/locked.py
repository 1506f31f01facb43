"""Locked (atomic read-modify-write) instructions per request, from two callgrind runs made
with --dump-instr=yes: the executions of each `lock`-prefixed instruction (and `xchg` with
memory, locked without the prefix) in BINARY's own code, the FEW-request run's taken from the
MANY-request run's, over MANY - FEW. An uncontended one costs ~20 cycles (it drains the
store buffer) where a plain add costs one, so they tell where user time goes that the
instruction count does not. Code in shared libraries (libc) is not counted.
Usage: locked.py NAME BINARY FEW_FILE MANY_FILE REQUESTS [TOP]"""
import collections
import os
import re
import subprocess
import sys

name, binary, few_file, many_file = sys.argv[1:5]
requests = int(sys.argv[5])
top = int(sys.argv[6]) if len(sys.argv) > 6 else 0

locked = {}
function = "?"
disassembly = subprocess.run(
    ["objdump", "-d", "--no-show-raw-insn", "-C", binary], capture_output=True, text=True, check=True
).stdout
for line in disassembly.splitlines():
    if m := re.match(r"^[0-9a-f]+ <(.*)>:$", line):
        function = m.group(1)
    elif m := re.match(r"^\s+([0-9a-f]+):\s+(\S+)\s*(\S*)", line):
        op, arg = m.group(2), m.group(3)
        if op == "lock" or (op.startswith("xchg") and "(" in arg):
            locked[int(m.group(1), 16)] = function


def executions(path):
    """Per instruction address in BINARY's object, how often it ran (callgrind's
    compressed positions: an address is absolute, or relative to the last one)."""
    counts = collections.Counter()
    objects = {}
    in_binary = after_call = False
    address = 0
    for line in open(path):
        if m := re.match(r"c?ob=\((\d+)\)(?: (.*))?", line):
            if m.group(2):
                objects[m.group(1)] = m.group(2).strip()
            if line.startswith("ob="):
                in_binary = os.path.realpath(objects.get(m.group(1), "")) == target
            continue
        if line.startswith("calls="):
            after_call = True  # the next line is the call's inclusive cost, not a run of it
            continue
        if line[:1] not in "0123456789+-*":
            continue
        fields = line.split()
        if len(fields) < 3:
            continue
        position = fields[0]
        if position.startswith("0x"):
            address = int(position, 16)
        elif position != "*":
            address += int(position)
        if after_call:
            after_call = False
        elif in_binary:
            counts[address] += int(fields[2])
    return counts


target = os.path.realpath(binary)
few, many = executions(few_file), executions(many_file)
by_function = collections.Counter()
for address, function in locked.items():
    per = (many[address] - few[address]) / requests
    if per:
        by_function[function] += per
print(f"{name}: {sum(by_function.values()):,.1f} locked instructions per request")
for function, per in by_function.most_common(top):
    print(f"  {per:6.2f}  {function[:140]}")
