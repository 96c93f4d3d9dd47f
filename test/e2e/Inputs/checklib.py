"""What the end-to-end check scripts beside this file share: running a tool,
reading a logits dump, comparing logit rows within the golden tolerance,
and loading a reference script of ../shared/golden/tools by path."""
import argparse
import importlib.util
import struct
import subprocess
import sys

# |got - want| <= ATOL + RTOL * |want|: the golden tolerance (fp32).
ATOL = RTOL = 1e-4


def tool_args(description, artifact=True):
    """An argument parser with the tool flags every check takes: --loomc,
    --loom-run, --workdir, --device (loom-run's) and, with artifact,
    --artifact (compiled earlier: loomc is then not run, for machines with
    only the runtime; checks of several artifacts add their own flag)."""
    ap = argparse.ArgumentParser(description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loomc", required=True)
    ap.add_argument("--loom-run", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--device", default="cpu", help="loom-run --device (cpu or cuda)")
    if artifact:
        ap.add_argument("--artifact", help="an artifact compiled earlier (loomc is then not run)")
    return ap


def run(cmd, text=False, with_stderr=False):
    """Runs cmd; exits with its stderr on failure. Returns stdout (bytes, or
    str with text), or (stdout, stderr) with with_stderr (stderr as str)."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = p.stderr.decode(errors="replace")
    if p.returncode != 0:
        sys.exit("FAILED: %s\nexit %d\nstderr: %s" % (" ".join(cmd), p.returncode, err))
    out = p.stdout.decode() if text else p.stdout
    return (out, err) if with_stderr else out


def read_f32(path):
    """A little-endian float32 file (loom-run --dump-logits, golden .bin)."""
    data = open(path, "rb").read()
    return struct.unpack("<%df" % (len(data) // 4), data)


def compare_row(name, got, got_row, want, vocab):
    """Row got_row of the flat dump `got` against the vocab values of `want`
    (any sequence); exits on the first value out of tolerance. Returns the
    largest |diff|."""
    worst = 0.0
    base = got_row * vocab
    for v in range(vocab):
        x, y = got[base + v], float(want[v])
        d = abs(x - y)
        worst = max(worst, d)
        if d > ATOL + RTOL * abs(y):
            sys.exit("FAILED %s: row %d id %d: got %.7g, want %.7g" % (name, got_row, v, x, y))
    return worst


def load_module(path, name):
    """Imports the Python file at path (a reference of ../shared/golden/tools)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
