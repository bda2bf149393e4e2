"""Criterion's console output -> one line per benchmark: name [low estimate, high estimate]."""
import re, sys

name = None
for line in open(sys.argv[1], errors="replace"):
    line = line.rstrip("\n")
    m = re.match(r"^(\S.*?)?\s+time:\s+\[(.*)\]", line)
    if m and "%" not in m.group(2):  # a "change:" block repeats "time:" with percentages
        n = (m.group(1) or name or "?").strip()
        low, _, high = [" ".join(p) for p in zip(*[iter(m.group(2).split())] * 2)]
        print(f"{n:<40} [{low}, {high}]")
        name = None
    elif line and not line.startswith((" ", "Benchmarking", "Found", "Gnuplot", "change", "Performance",
                                        "No change", "Change", "  ", "warning", "Compiling", "Finished",
                                        "Running", "Warming", "Analyzing", "Collecting")):
        name = line.strip()
