#!/usr/bin/env python3
"""Runs a command and reports how it ended, for FileCheck.

  run.py [--expect-exit N] [--stdout FILE] -- COMMAND ARGS...

An argument written @file:PATH is replaced by the contents of PATH (without
its trailing newline), for arguments too long to spell in a RUN line.

Prints, on stdout:
  exit=N                 the exit code ('signal=NAME' if it was killed)
  stdout-bytes=N         how many bytes the command wrote on stdout
  stderr-lines=N         how many lines it wrote on stderr
  stderr: LINE           each stderr line
  stdout: LINE           each stdout line (unless --stdout FILE saves them)

and exits 1 if --expect-exit N was given and the command did not exit with
exactly N (a crash by signal never matches). lit's `not` only checks that the
code is non-zero; this checks the code itself.
"""
import signal
import subprocess
import sys


def main():
    args = sys.argv[1:]
    expect = None
    stdout_file = None
    while args and args[0] != "--":
        if args[0] == "--expect-exit":
            expect = int(args[1])
            args = args[2:]
        elif args[0] == "--stdout":
            stdout_file = args[1]
            args = args[2:]
        else:
            sys.exit("run.py: unknown option " + args[0])
    if not args:
        sys.exit(__doc__)
    cmd = []
    for a in args[1:]:
        if a.startswith("@file:"):
            with open(a[len("@file:"):]) as f:
                a = f.read().rstrip("\n")
        cmd.append(a)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=600)
    if p.returncode < 0:
        print("signal=" + signal.Signals(-p.returncode).name)
    else:
        print("exit=%d" % p.returncode)
    print("stdout-bytes=%d" % len(p.stdout))
    err = p.stderr.decode("utf-8", "replace").splitlines()
    print("stderr-lines=%d" % len(err))
    for line in err:
        print("stderr: " + line)
    if stdout_file:
        with open(stdout_file, "wb") as f:
            f.write(p.stdout)
    else:
        for line in p.stdout.decode("utf-8", "replace").splitlines():
            print("stdout: " + line)
    sys.stdout.flush()
    if expect is not None and p.returncode != expect:
        sys.stderr.write("run.py: expected exit code %d, got %s: %s\n" %
                         (expect, p.returncode, " ".join(cmd)))
        sys.exit(1)


if __name__ == "__main__":
    main()
