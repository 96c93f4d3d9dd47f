"""The first position's logits of each dump (--dump-logits) against a
reference dump: the RMS of the difference relative to the reference's RMS.
Exits 1 unless the errors strictly increase in the order given (a finer
format must be closer to the reference).

  first_row_error.py VOCAB REF.logits A.logits B.logits ...
"""
import sys

import numpy as np

vocab = int(sys.argv[1])
ref = np.fromfile(sys.argv[2], "<f4")[:vocab].astype(np.float64)
errors = []
for path in sys.argv[3:]:
    x = np.fromfile(path, "<f4")[:vocab].astype(np.float64)
    errors.append(np.sqrt(((x - ref) ** 2).mean() / (ref ** 2).mean()))
    print("%s: relative RMS error %.4f" % (path.rsplit("/", 1)[-1], errors[-1]))
sys.exit(0 if all(a < b for a, b in zip(errors, errors[1:])) and errors[0] > 0 else 1)
