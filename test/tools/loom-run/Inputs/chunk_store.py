#!/usr/bin/env python3
"""Helpers for the chunk store tests (chunk-store.test).

  chunk_store.py perturb-bundle IN OUT TENSOR
      copy a safetensors bundle, scaling the first float of TENSOR by 1.5
      (a bundle with another encoder or projector)
  chunk_store.py repeat-line IN OUT N
      write the first line of IN, N times, one a line (a large corpus)
  chunk_store.py truncate IN OUT N
      keep the first N bytes of IN
  chunk_store.py interrupt OUT -- COMMAND ARGS...
      run COMMAND, send it SIGINT once OUT.tmp exists (the store is being
      written), and print how it ended, its last stderr line and which of
      OUT and OUT.tmp exist afterwards
"""
import json
import os
import signal
import struct
import subprocess
import sys
import time


def perturb_bundle(src, dst, tensor):
    data = bytearray(open(src, "rb").read())
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + n])
    begin = 8 + n + header[tensor]["data_offsets"][0]
    (x,) = struct.unpack_from("<f", data, begin)
    struct.pack_into("<f", data, begin, x * 1.5 + 0.25)
    open(dst, "wb").write(data)


def interrupt(out, cmd):
    tmp = out + ".tmp"
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not os.path.exists(tmp) and p.poll() is None and time.time() < deadline:
        time.sleep(0.001)
    sent = p.poll() is None
    if sent:
        p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    if p.returncode < 0:
        print("signal=" + signal.Signals(-p.returncode).name)
    else:
        print("exit=%d" % p.returncode)
    print("interrupted-while-writing=%s" % ("yes" if sent else "no"))
    lines = err.decode("utf-8", "replace").strip().splitlines()
    print("last-stderr: " + (lines[-1] if lines else ""))
    print("out-exists=%s" % ("yes" if os.path.exists(out) else "no"))
    print("tmp-exists=%s" % ("yes" if os.path.exists(tmp) else "no"))


def main():
    a = sys.argv[1:]
    if not a:
        sys.exit(__doc__)
    if a[0] == "perturb-bundle" and len(a) == 4:
        perturb_bundle(a[1], a[2], a[3])
    elif a[0] == "repeat-line" and len(a) == 4:
        with open(a[1]) as f:
            line = f.readline().rstrip("\n")
        with open(a[2], "w") as f:
            f.write((line + "\n") * int(a[3]))
    elif a[0] == "truncate" and len(a) == 4:
        data = open(a[1], "rb").read()
        open(a[2], "wb").write(data[:int(a[3])])
    elif a[0] == "interrupt" and len(a) >= 4 and a[2] == "--":
        interrupt(a[1], a[3:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
