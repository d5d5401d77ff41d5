"""What the benchmarks print and record besides their figures: the table of two (or three)
servers with ratios against targets, and the machine they ran on. Shared by bench.py (SMTP, against
chasquid) and imap.py (IMAP, against Dovecot).
"""

import os
import platform
import subprocess


def verdict(ours, theirs, target):
    """(ratio text, target text, met?) of `ours / theirs` against `target`, a pair
    (">=" or "<=", ratio) or None."""
    ratio = ours / theirs if ours is not None and theirs not in (None, 0) else None
    if target is None:
        goal, met = "", ""
    else:
        kind, want = target
        goal = f"{kind} {want:g}x"
        met = "n/a" if ratio is None else (
            "yes" if (ratio >= want if kind == ">=" else ratio <= want) else "no")
    return ("" if ratio is None else f"{ratio:.2f}x"), goal, met


def ratio_table(names, rows):
    """A Markdown table: metric | <ours> | <theirs> | ratio | target | met?. Each row is
    (label, our cell, their cell, our value, their value, target) where the cells are the
    figures as printed and the values the numbers the ratio is made of (None: none)."""
    head = ["metric", *names, "ratio", "target", "met?"]
    lines = []
    for label, ours_cell, theirs_cell, ours, theirs, target in rows:
        lines.append([label, ours_cell, theirs_cell, *verdict(ours, theirs, target)])
    widths = [max(len(str(r[i])) for r in [head] + lines) for i in range(len(head))]

    def line(r):
        return "| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep] + [line(r) for r in lines])


def three_way_table(names, rows):
    """A Markdown table: metric | <ours> | <theirs> | <third> | floor | ours/theirs | target |
    met? | ours/third. Each row is (label, cells, values, floor cell, target): the figures as
    printed and the numbers the ratios are made of (None: none), one per name; the target
    applies to ours/theirs."""
    ours, theirs, third = names
    head = ["metric", *names, "floor", f"{ours}/{theirs}", "target", "met?", f"{ours}/{third}"]
    lines = []
    for label, cells, values, floor, target in rows:
        ratio, goal, met = verdict(values[0], values[1], target)
        third_ratio, _, _ = verdict(values[0], values[2], None)
        lines.append([label, *cells, floor, ratio, goal, met, third_ratio])
    widths = [max(len(str(r[i])) for r in [head] + lines) for i in range(len(head))]

    def line(r):
        return "| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep] + [line(r) for r in lines])


def command_output(argv):
    """What `argv` prints, stripped; None when it cannot run."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def environment(root, **versions):
    """The machine, the file system of `root`, and `versions` (name: text) as given."""
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f
                          if ln.startswith("model name")), None)
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "tmp_filesystem": command_output(["stat", "-f", "-c", "%T", root]),
        "python": platform.python_version(),
        **versions,
    }
