"""ggml's quantized blocks in numpy, written from ggml's block layouts for
the Loom tests: an independent twin of Loom's decoder
(runtime/include/loom/ggml_blocks.h).

  decode(type, raw, n) -> n float32 values (row-major; n a whole number of
                          blocks)
  BLOCKS[type] = (values per block, bytes per block)

Every value is computed in float32 with ggml's order of operations (one
rounding per multiply and per add, no fused multiply-add), so it equals
ggml's dequantize_row_* bit for bit; ggml_vectors.bin (ggml_vectors.py)
holds ggml's own outputs on random blocks to show it.
"""
import numpy as np

F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, BF16 = 10, 11, 12, 13, 14, 30

NAMES = {F32: "F32", F16: "F16", Q4_0: "Q4_0", Q4_1: "Q4_1", Q5_0: "Q5_0", Q5_1: "Q5_1",
         Q8_0: "Q8_0", Q2_K: "Q2_K", Q3_K: "Q3_K", Q4_K: "Q4_K", Q5_K: "Q5_K", Q6_K: "Q6_K",
         BF16: "BF16"}

BLOCKS = {F32: (1, 4), F16: (1, 2), BF16: (1, 2), Q4_0: (32, 18), Q4_1: (32, 20),
          Q5_0: (32, 22), Q5_1: (32, 24), Q8_0: (32, 34), Q2_K: (256, 84),
          Q3_K: (256, 110), Q4_K: (256, 144), Q5_K: (256, 176), Q6_K: (256, 210)}

f32 = np.float32


def _half(blocks, at):
    """The little-endian f16 at byte `at` of each block, as float32."""
    return blocks[:, at:at + 2].copy().view("<f2").astype(f32)  # (nb, 1)


def _nibbles(qs):
    """(nb, 16) bytes -> (nb, 32): low nibbles are values 0..15, high 16..31."""
    return np.concatenate([qs & 15, qs >> 4], axis=1)


def _high_bits(qh4):
    """(nb, 4) bytes of a little-endian u32 -> (nb, 32) bits 0..31."""
    bits = qh4.copy().view("<u4")  # (nb, 1)
    return ((bits >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)


def _scale_min_k4(sc):
    """Q4_K / Q5_K: 12 bytes -> (scales, mins), each (nb, 8) of 6 bits."""
    s = np.empty((sc.shape[0], 8), np.uint8)
    m = np.empty((sc.shape[0], 8), np.uint8)
    s[:, :4] = sc[:, 0:4] & 63
    m[:, :4] = sc[:, 4:8] & 63
    s[:, 4:] = (sc[:, 8:12] & 0xF) | ((sc[:, 0:4] >> 6) << 4)
    m[:, 4:] = (sc[:, 8:12] >> 4) | ((sc[:, 4:8] >> 6) << 4)
    return s, m


def _q3_scales(sc):
    """Q3_K: 12 bytes -> 16 signed scales (6 bits, minus 32)."""
    lo = np.concatenate([sc[:, 0:8] & 0xF, sc[:, 0:8] >> 4], axis=1)  # 16 low nibbles
    hi2 = np.concatenate([(sc[:, 8:12] >> s) & 3 for s in (0, 2, 4, 6)], axis=1)
    return (lo | (hi2 << 4)).astype(np.int32) - 32


def decode(typ, raw, n):
    per, size = BLOCKS[typ]
    if typ == F32:
        return np.frombuffer(raw, "<f4", n).astype(f32)
    if typ == F16:
        return np.frombuffer(raw, "<f2", n).astype(f32)
    if typ == BF16:
        return (np.frombuffer(raw, "<u2", n).astype(np.uint32) << 16).view(f32)
    nb = n // per
    b = np.frombuffer(raw, np.uint8, nb * size).reshape(nb, size)
    if typ == Q8_0:
        return (_half(b, 0) * b[:, 2:34].view(np.int8).astype(f32)).reshape(-1)
    if typ == Q4_0:
        return (_half(b, 0) * (_nibbles(b[:, 2:18]).astype(f32) - f32(8))).reshape(-1)
    if typ == Q4_1:
        return (_half(b, 0) * _nibbles(b[:, 4:20]).astype(f32) + _half(b, 2)).reshape(-1)
    if typ == Q5_0:
        q = _nibbles(b[:, 6:22]) | (_high_bits(b[:, 2:6]) << 4)
        return (_half(b, 0) * (q.astype(f32) - f32(16))).reshape(-1)
    if typ == Q5_1:
        q = _nibbles(b[:, 8:24]) | (_high_bits(b[:, 4:8]) << 4)
        return (_half(b, 0) * q.astype(f32) + _half(b, 2)).reshape(-1)
    y = np.empty((nb, 256), f32)
    if typ == Q2_K:  # scales[16] qs[64] d dmin
        d, dmin, sc, qs = _half(b, 80), _half(b, 82), b[:, 0:16], b[:, 16:80]
        for g in range(16):  # 16 groups of 16 values
            half, j, part = g // 8, (g % 8) // 2, g % 2
            q = (qs[:, 32 * half + 16 * part:32 * half + 16 * part + 16] >> (2 * j)) & 3
            dl = d * (sc[:, g:g + 1] & 0xF).astype(f32)
            ml = dmin * (sc[:, g:g + 1] >> 4).astype(f32)
            y[:, 16 * g:16 * g + 16] = dl * q.astype(f32) - ml
    elif typ == Q3_K:  # hmask[32] qs[64] scales[12] d
        d, hm, qs, scales = _half(b, 108), b[:, 0:32], b[:, 32:96], _q3_scales(b[:, 96:108])
        for g in range(16):
            half, j, part = g // 8, (g % 8) // 2, g % 2
            cols = slice(32 * half + 16 * part, 32 * half + 16 * part + 16)
            low = ((qs[:, cols] >> (2 * j)) & 3).astype(np.int32)
            high = (hm[:, 16 * part:16 * part + 16] >> (4 * half + j)) & 1
            dl = d * scales[:, g:g + 1].astype(f32)
            y[:, 16 * g:16 * g + 16] = dl * (low - 4 * (1 - high.astype(np.int32))).astype(f32)
    elif typ in (Q4_K, Q5_K):  # d dmin scales[12] (qh[32]) qs[128]
        d, dmin = _half(b, 0), _half(b, 2)
        s, m = _scale_min_k4(b[:, 4:16])
        qs = b[:, 16:144] if typ == Q4_K else b[:, 48:176]
        for g in range(8):  # 8 groups of 32 values
            q = qs[:, 32 * (g // 2):32 * (g // 2) + 32]
            q = (q & 0xF) if g % 2 == 0 else (q >> 4)
            if typ == Q5_K:
                q = q | (((b[:, 16:48] >> g) & 1) << 4)
            d1 = d * s[:, g:g + 1].astype(f32)
            m1 = dmin * m[:, g:g + 1].astype(f32)
            y[:, 32 * g:32 * g + 32] = d1 * q.astype(f32) - m1
    elif typ == Q6_K:  # ql[128] qh[64] scales[16] (int8) d
        d, ql, qh, sc = _half(b, 208), b[:, 0:128], b[:, 128:192], b[:, 192:208].view(np.int8)
        for half in range(2):
            for k in range(4):  # 4 runs of 32 values per half
                low = ql[:, 64 * half + 32 * (k % 2):64 * half + 32 * (k % 2) + 32]
                low = (low & 0xF) if k < 2 else (low >> 4)
                high = (qh[:, 32 * half:32 * half + 32] >> (2 * k)) & 3
                q = (low | (high << 4)).astype(np.int32) - 32
                for sub in range(2):  # 16 values per scale
                    g = 8 * half + 2 * k + sub
                    dl = d * sc[:, g:g + 1].astype(f32)
                    at = 128 * half + 32 * k + 16 * sub
                    y[:, at:at + 16] = dl * q[:, 16 * sub:16 * sub + 16].astype(f32)
    else:
        raise ValueError("no decoder for ggml type %d" % typ)
    return y.reshape(-1)
