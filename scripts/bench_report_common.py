"""Helpers shared by the benchmark report scripts: the machine's description and replacing one
script's section of BENCHMARKS.md atomically."""
import os
import pathlib
import re
import subprocess


def machine():
    try:
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((l.split(":", 1)[1].strip() for l in cpu.splitlines()
                      if l.startswith("Model name")), "unknown CPU")
    except OSError:
        model = "unknown CPU"
    return f"{os.cpu_count()} cores ({model})"


def write_section(path, name, script, section):
    """Replaces the section `name` of `path` (between `<!-- name:begin ... -->` and
    `<!-- name:end -->`) with `section`, appending it the first time."""
    begin, end = f"<!-- {name}:begin", f"<!-- {name}:end -->"
    section = f"{begin} (written by {script}; rerun it to update) -->\n" \
              f"{section.rstrip()}\n{end}\n"
    text = pathlib.Path(path).read_text()
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = f"{path}.tmp"
    pathlib.Path(tmp).write_text(text)
    os.replace(tmp, path)
