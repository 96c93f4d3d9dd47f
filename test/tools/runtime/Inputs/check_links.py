#!/usr/bin/env python3
"""Reports whether binaries link LLVM or MLIR, dynamically or statically.

  check_links.py [--follow NAME]... BINARY...

A BINARY that is not a path to a file is looked up on PATH.

For each BINARY (and each shared library in its `ldd` output whose name
starts with a --follow NAME, e.g. libloomrt) prints
  binary: NAME
  needs: LINE                  each line of `ldd`
  llvm-mlir-libraries: N       ldd lines naming libLLVM or libMLIR
  llvm-mlir-symbols: N         mangled llvm::/mlir:: names in the file
                               (symbol tables and RTTI, so static linking
                               shows too, even in a stripped file)
"""
import os
import re
import shutil
import subprocess
import sys

MANGLED = re.compile(rb"_ZN[KVL]?\d*4(?:llvm|mlir)|N4(?:llvm|mlir)\d")


def ldd(path):
    out = subprocess.run(["ldd", path], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, check=True).stdout
    return [l.strip() for l in out.decode().splitlines() if l.strip()]


def report(path):
    print("binary: " + os.path.basename(path))
    lines = ldd(path)
    for line in lines:
        # Drop the load addresses, which change from run to run.
        print("needs: " + re.sub(r"\s*\(0x[0-9a-f]+\)$", "", line))
    libs = [l for l in lines if re.search(r"lib(LLVM|MLIR)", l)]
    print("llvm-mlir-libraries: %d" % len(libs))
    with open(path, "rb") as f:
        data = f.read()
    print("llvm-mlir-symbols: %d" % len(MANGLED.findall(data)))
    return lines


def main():
    args = sys.argv[1:]
    follow = []
    while args and args[0] == "--follow":
        follow.append(args[1])
        args = args[2:]
    if not args:
        sys.exit(__doc__)
    seen = set()
    for path in args:
        if not os.path.isfile(path):
            found = shutil.which(path)
            if not found:
                sys.exit("check_links: %s not found on PATH" % path)
            path = found
        for line in report(path):
            m = re.match(r"(\S+) => (\S+)", line)
            if m and any(m.group(1).startswith(f) for f in follow) \
                    and m.group(2) not in seen:
                seen.add(m.group(2))
                report(m.group(2))


if __name__ == "__main__":
    main()
