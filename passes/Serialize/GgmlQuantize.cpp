//===- GgmlQuantize.cpp - ggml's reference quantizers ---------------------===//
//
// Written from ggml's published algorithms (ggml-quants.c, MIT); see the
// header. Names follow ggml's where they help comparing the two.
//
//===----------------------------------------------------------------------===//
#include "passes/Serialize/GgmlQuantize.h"

#include "llvm/Support/Parallel.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>

using namespace loom;

uint16_t loom::floatToHalf(float value) {
  uint32_t x;
  std::memcpy(&x, &value, sizeof x);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) // infinity or NaN
    return sign | 0x7c00u | (x > 0x7f800000u ? 0x200u : 0u);
  if (x >= 0x47800000u) // 65536 and above: past the largest half
    return sign | 0x7c00u;
  if (x < 0x38800000u) { // below 2^-14: a subnormal half (or zero)
    float magnitude;
    std::memcpy(&magnitude, &x, sizeof magnitude);
    return sign | uint16_t(std::nearbyint(magnitude * 16777216.0f));
  }
  const uint32_t mant = x & 0x7fffffu;
  uint32_t h = (((x >> 23) - 112) << 10) | (mant >> 13);
  const uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
    ++h; // may carry into the exponent, up to infinity
  return sign | uint16_t(h);
}

namespace {

constexpr int kQK = 32;                 // Q8_0 / Q4_0 block
constexpr int kQKK = ggml::kSuperBlock; // K block
constexpr float kGroupMaxEps = 1e-15f;  // ggml's GROUP_MAX_EPS

float halfRoundTrip(float v) { return halfToFloat(floatToHalf(v)); }

/// ggml's nearest_int: round to nearest even by adding 1.5 * 2^23 (exact
/// for |v| <= 2^22; beyond, and for NaN, a defined but meaningless int).
int nearestInt(float v) {
  const float shifted = v + 12582912.0f;
  int32_t bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  return (bits & 0x007fffff) - 0x00400000;
}

void putHalf(char *at, float v) {
  const uint16_t h = floatToHalf(v);
  std::memcpy(at, &h, sizeof h);
}

/// quantize_row_q8_0_ref: d = max|x| / 127 as a half, q = round(x / d)
/// with the unrounded d.
void quantizeQ8_0(const float *x, char *block) {
  float amax = 0.0f;
  for (int j = 0; j < kQK; ++j) { // ggml's MAX(a, b): a > b ? a : b (NaN too)
    const float a = std::fabs(x[j]);
    amax = amax > a ? amax : a;
  }
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  putHalf(block, d);
  for (int j = 0; j < kQK; ++j) {
    // ggml's roundf; clamped (a subnormal d makes id infinite, a NaN weight
    // a NaN) so that the conversion is defined.
    const float q = std::round(x[j] * id);
    block[2 + j] = char(int8_t(q >= 127.0f    ? 127
                               : q <= -128.0f ? -128
                               : q == q       ? int(q)
                                              : 0));
  }
}

/// quantize_row_q4_0_ref: the value of largest magnitude m, d = m / -8 as a
/// half, q = min(15, trunc(x / d + 8.5)) with the unrounded d, low nibbles
/// the first 16 values.
void quantizeQ4_0(const float *x, char *block) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < kQK; ++j)
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  const float d = max / -8.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  putHalf(block, d);
  // Clamped into 0..15 (a subnormal d makes id infinite, a NaN weight a
  // NaN) so that the conversion is defined.
  auto nibble = [](float v) {
    const float t = v + 8.5f;
    return t >= 15.0f ? 15 : t >= 0.0f ? int(t) : 0;
  };
  for (int j = 0; j < kQK / 2; ++j)
    block[2 + j] = char(nibble(x[j] * id) | (nibble(x[j + 16] * id) << 4));
}

/// make_qkx2_quants: a scale and a min for n values (L[i] in 0..nmax), the
/// min at most 0, chosen by weighted least squares over nstep + 1 trial
/// scales. Returns the scale; *theMin = -min.
float makeQkx2Quants(int n, int nmax, const float *x, const float *weights,
                     uint8_t *L, float *theMin, uint8_t *Laux, float rmin,
                     float rdelta, int nstep, bool useMad = false) {
  // The error of a difference: its square, or (useMad) its magnitude.
  auto error = [&](float diff) {
    return useMad ? std::fabs(diff) : diff * diff;
  };
  float min = x[0], max = x[0];
  float sumW = weights[0];
  float sumX = sumW * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min)
      min = x[i];
    if (x[i] > max)
      max = x[i];
    const float w = weights[i];
    sumW += w;
    sumX += w * x[i];
  }
  if (min > 0)
    min = 0;
  if (max == min) {
    std::fill(L, L + n, 0);
    *theMin = -min;
    return 0.0f;
  }
  float iscale = float(nmax) / (max - min);
  float scale = 1 / iscale;
  float bestError = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearestInt(iscale * (x[i] - min));
    L[i] = uint8_t(std::max(0, std::min(nmax, l)));
    const float diff = scale * float(L[i]) + min - x[i];
    bestError += weights[i] * error(diff);
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * float(is) + float(nmax)) / (max - min);
    float sumL = 0, sumL2 = 0, sumXL = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearestInt(iscale * (x[i] - min));
      l = std::max(0, std::min(nmax, l));
      Laux[i] = uint8_t(l);
      const float w = weights[i];
      sumL += w * float(l);
      sumL2 += w * float(l) * float(l);
      sumXL += w * float(l) * x[i];
    }
    const float D = sumW * sumL2 - sumL * sumL;
    if (D > 0) {
      float thisScale = (sumW * sumXL - sumX * sumL) / D;
      float thisMin = (sumL2 * sumX - sumL * sumXL) / D;
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = sumXL / sumL2;
      }
      float curError = 0;
      for (int i = 0; i < n; ++i) {
        const float diff = thisScale * float(Laux[i]) + thisMin - x[i];
        curError += weights[i] * error(diff);
      }
      if (curError < bestError) {
        std::copy(Laux, Laux + n, L);
        bestError = curError;
        scale = thisScale;
        min = thisMin;
      }
    }
  }
  *theMin = -min;
  return scale;
}

/// get_scale_min_k4's inverse: stores scale ls and min lm (6 bits each) of
/// group j into the 12 packed bytes.
void packScaleMin(uint8_t *s, int j, uint8_t ls, uint8_t lm) {
  if (j < 4) {
    s[j] = ls;
    s[j + 4] = lm;
  } else {
    s[j + 4] = uint8_t((ls & 0xf) | ((lm & 0xf) << 4));
    s[j - 4] |= uint8_t((ls >> 4) << 6);
    s[j] |= uint8_t((lm >> 4) << 6);
  }
}

/// quantize_row_q4_K_ref (nmax 15) and quantize_row_q5_K_ref (nmax 31).
void quantizeQ45K(const float *x, char *out, bool five) {
  const int nmax = five ? 31 : 15;
  uint8_t L[kQKK], Laux[32];
  float weights[32], mins[8], scales[8];
  float maxScale = 0, maxMin = 0;
  for (int j = 0; j < 8; ++j) {
    float sumX2 = 0;
    for (int l = 0; l < 32; ++l)
      sumX2 += x[32 * j + l] * x[32 * j + l];
    const float avX = std::sqrt(sumX2 / 32);
    for (int l = 0; l < 32; ++l)
      weights[l] = avX + std::fabs(x[32 * j + l]);
    scales[j] =
        makeQkx2Quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j],
                       Laux, five ? -0.5f : -1.0f, 0.1f, five ? 15 : 20);
    if (scales[j] > maxScale)
      maxScale = scales[j];
    if (mins[j] > maxMin)
      maxMin = mins[j];
  }
  auto *b = reinterpret_cast<uint8_t *>(out);
  uint8_t *s = b + 4;
  std::memset(s, 0, 12);
  const float invScale = maxScale > 0 ? 63.0f / maxScale : 0.0f;
  const float invMin = maxMin > 0 ? 63.0f / maxMin : 0.0f;
  for (int j = 0; j < 8; ++j) {
    const uint8_t ls =
        std::min<uint8_t>(63, uint8_t(nearestInt(invScale * scales[j])));
    const uint8_t lm =
        std::min<uint8_t>(63, uint8_t(nearestInt(invMin * mins[j])));
    packScaleMin(s, j, ls, lm);
  }
  putHalf(out, maxScale / 63.0f);
  putHalf(out + 2, maxMin / 63.0f);
  const float d = halfRoundTrip(maxScale / 63.0f);
  const float dmin = halfRoundTrip(maxMin / 63.0f);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    ggml::scaleMinK4(s, j, sc, m);
    const float dj = d * float(sc);
    if (dj == 0.0f)
      continue; // keeps make_qkx2_quants' L, as ggml does
    const float dm = dmin * float(m);
    for (int ii = 0; ii < 32; ++ii) {
      const int l = nearestInt((x[32 * j + ii] + dm) / dj);
      L[32 * j + ii] = uint8_t(std::max(0, std::min(nmax, l)));
    }
  }
  uint8_t *qs = b + (five ? 48 : 16);
  if (five) {
    uint8_t *qh = b + 16;
    std::memset(qh, 0, 32);
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < kQKK; n += 64, qs += 32, m1 <<= 2, m2 <<= 2)
      for (int j = 0; j < 32; ++j) {
        int l1 = L[n + j], l2 = L[n + j + 32];
        if (l1 > 15) {
          l1 -= 16;
          qh[j] |= m1;
        }
        if (l2 > 15) {
          l2 -= 16;
          qh[j] |= m2;
        }
        qs[j] = uint8_t(l1 | (l2 << 4));
      }
    return;
  }
  for (int j = 0; j < kQKK; j += 64, qs += 32)
    for (int l = 0; l < 32; ++l)
      qs[l] = uint8_t(L[j + l] | (L[j + l + 32] << 4));
}

/// The start that make_qx_quants (rmse_type 1) and make_q3_quants share:
/// the value of largest magnitude `max` and, for iscale = -nmax / max, each
/// value's quant l[i] in -nmax..nmax-1 with the x^2-weighted sums
/// sum(w x l), sum(w l^2). False (and nothing else set) when every |x| is
/// below ggml's GROUP_MAX_EPS.
struct SignedQuants {
  float max = 0, sumLX = 0, sumL2 = 0;
  int l[16];
};
bool signedQuants(int n, int nmax, const float *x, SignedQuants &q) {
  float amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      q.max = x[i];
    }
  }
  if (amax < kGroupMaxEps)
    return false;
  const float iscale = float(-nmax) / q.max;
  for (int i = 0; i < n; ++i) {
    q.l[i] = std::max(-nmax, std::min(nmax - 1, nearestInt(iscale * x[i])));
    const float w = x[i] * x[i];
    q.sumLX += w * x[i] * float(q.l[i]);
    q.sumL2 += w * float(q.l[i]) * float(q.l[i]);
  }
  return true;
}

/// make_qx_quants with rmse_type 1 and no importance weights: a signed
/// scale for n (at most 16) values (L[i] = l + nmax, l in -nmax..nmax-1),
/// the best of 19 trial scales by the x^2-weighted least squares.
float makeQxQuants(int n, int nmax, const float *x, int8_t *L) {
  SignedQuants q;
  if (!signedQuants(n, nmax, x, q)) {
    std::fill(L, L + n, 0);
    return 0.0f;
  }
  auto clampL = [&](int l) { return std::max(-nmax, std::min(nmax - 1, l)); };
  const float max = q.max;
  float iscale, sumLX = q.sumLX, sumL2 = q.sumL2;
  for (int i = 0; i < n; ++i)
    L[i] = int8_t(q.l[i] + nmax);
  float scale = sumL2 != 0 ? sumLX / sumL2 : 0.0f;
  float best = scale * sumLX;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0)
      continue;
    iscale = -(float(nmax) + 0.1f * float(is)) / max;
    sumLX = sumL2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clampL(nearestInt(iscale * x[i]));
      const float w = x[i] * x[i];
      sumLX += w * x[i] * float(l);
      sumL2 += w * float(l) * float(l);
    }
    if (sumL2 > 0 && sumLX * sumLX > best * sumL2) {
      for (int i = 0; i < n; ++i)
        L[i] = int8_t(nmax + clampL(nearestInt(iscale * x[i])));
      scale = sumLX / sumL2;
      best = scale * sumLX;
    }
  }
  return scale;
}

/// quantize_row_q6_K_ref.
void quantizeQ6K(const float *x, char *out) {
  int8_t L[kQKK];
  float scales[16];
  float maxScale = 0, maxAbsScale = 0;
  for (int ib = 0; ib < 16; ++ib) {
    scales[ib] = makeQxQuants(16, 32, x + 16 * ib, L + 16 * ib);
    const float abs = std::fabs(scales[ib]);
    if (abs > maxAbsScale) {
      maxAbsScale = abs;
      maxScale = scales[ib];
    }
  }
  auto *b = reinterpret_cast<uint8_t *>(out);
  std::memset(b, 0, 210);
  if (maxAbsScale < kGroupMaxEps) {
    putHalf(out + 208, 0.0f);
    return;
  }
  auto *sc = reinterpret_cast<int8_t *>(b + 192);
  const float iscale = -128.0f / maxScale;
  putHalf(out + 208, 1 / iscale);
  for (int ib = 0; ib < 16; ++ib)
    sc[ib] = int8_t(std::min(127, nearestInt(iscale * scales[ib])));
  const float d = halfRoundTrip(1 / iscale);
  for (int j = 0; j < 16; ++j) {
    const float dj = d * float(sc[j]);
    if (dj == 0.0f)
      continue;
    for (int ii = 0; ii < 16; ++ii) {
      const int l = nearestInt(x[16 * j + ii] / dj);
      L[16 * j + ii] = int8_t(std::max(-32, std::min(31, l)) + 32);
    }
  }
  uint8_t *ql = b, *qh = b + 128;
  for (int j = 0; j < kQKK; j += 128, ql += 64, qh += 32)
    for (int l = 0; l < 32; ++l) {
      const uint8_t q1 = L[j + l] & 0xf, q2 = L[j + l + 32] & 0xf;
      const uint8_t q3 = L[j + l + 64] & 0xf, q4 = L[j + l + 96] & 0xf;
      ql[l] = uint8_t(q1 | (q3 << 4));
      ql[l + 32] = uint8_t(q2 | (q4 << 4));
      qh[l] =
          uint8_t((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                  ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
    }
}

/// The low 2 bits of L (256 values) into qs[64]: byte 32h + l holds
/// values 128h + l, + 32, + 64, + 96 in bits 0-1, 2-3, 4-5, 6-7.
void packTwoBits(const uint8_t *L, uint8_t *qs) {
  for (int j = 0; j < kQKK; j += 128)
    for (int l = 0; l < 32; ++l)
      qs[j / 4 + l] = uint8_t(L[j + l] | (L[j + l + 32] << 2) |
                              (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

/// quantize_row_q2_K_ref: per group of 16, a scale and a min by
/// make_qkx2_quants (|x| weights, absolute errors), both as 4 bits under
/// two half super-scales, then the values requantized against them.
void quantizeQ2K(const float *x, char *out) {
  auto *b = reinterpret_cast<uint8_t *>(out);
  uint8_t *sc = b, *qs = b + 16;
  uint8_t L[kQKK], Laux[16];
  float weights[16], mins[16], scales[16];
  constexpr float q4scale = 15.0f;
  float maxScale = 0, maxMin = 0;
  for (int j = 0; j < 16; ++j) {
    for (int l = 0; l < 16; ++l)
      weights[l] = std::fabs(x[16 * j + l]);
    scales[j] = makeQkx2Quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j],
                               Laux, -0.5f, 0.1f, 15, true);
    if (scales[j] > maxScale)
      maxScale = scales[j];
    if (mins[j] > maxMin)
      maxMin = mins[j];
  }
  if (maxScale > 0) {
    const float iscale = q4scale / maxScale;
    for (int j = 0; j < 16; ++j)
      sc[j] = uint8_t(nearestInt(iscale * scales[j]));
    putHalf(out + 80, maxScale / q4scale);
  } else {
    std::memset(sc, 0, 16);
    putHalf(out + 80, 0.0f);
  }
  if (maxMin > 0) {
    const float iscale = q4scale / maxMin;
    for (int j = 0; j < 16; ++j)
      sc[j] |= uint8_t(unsigned(nearestInt(iscale * mins[j])) << 4);
    putHalf(out + 82, maxMin / q4scale);
  } else {
    putHalf(out + 82, 0.0f);
  }
  const float d = ggml::halfAt(b + 80), dmin = ggml::halfAt(b + 82);
  for (int j = 0; j < 16; ++j) {
    const float dj = d * float(sc[j] & 0xf);
    if (dj == 0.0f)
      continue; // keeps make_qkx2_quants' L, as ggml does
    const float dm = dmin * float(sc[j] >> 4);
    for (int ii = 0; ii < 16; ++ii) {
      const int l = nearestInt((x[16 * j + ii] + dm) / dj);
      L[16 * j + ii] = uint8_t(std::max(0, std::min(3, l)));
    }
  }
  packTwoBits(L, qs);
}

/// make_q3_quants with do_rmse: a signed scale for n (at most 16) values
/// (L[i] = l + nmax, l in -nmax..nmax-1), refined value by value (up to 5
/// passes) by the x^2-weighted least squares.
float makeQ3Quants(int n, int nmax, const float *x, int8_t *L) {
  SignedQuants q;
  if (!signedQuants(n, nmax, x, q)) {
    std::fill(L, L + n, 0);
    return 0.0f;
  }
  auto clampL = [&](int l) { return std::max(-nmax, std::min(nmax - 1, l)); };
  float sumLX = q.sumLX, sumL2 = q.sumL2;
  for (int i = 0; i < n; ++i)
    L[i] = int8_t(q.l[i]);
  for (int itry = 0; itry < 5; ++itry) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumLX - w * x[i] * float(L[i]);
      if (slx > 0) {
        float sl2 = sumL2 - w * float(L[i]) * float(L[i]);
        const int newL = clampL(nearestInt(x[i] * sl2 / slx));
        if (newL != L[i]) {
          slx += w * x[i] * float(newL);
          sl2 += w * float(newL) * float(newL);
          if (sl2 > 0 && slx * slx * sumL2 > sumLX * sumLX * sl2) {
            L[i] = int8_t(newL);
            sumLX = slx;
            sumL2 = sl2;
            ++changed;
          }
        }
      }
    }
    if (!changed)
      break;
  }
  for (int i = 0; i < n; ++i)
    L[i] = int8_t(L[i] + nmax);
  return sumL2 > 0.0f ? sumLX / sumL2 : 0.0f;
}

/// quantize_row_q3_K_ref: per group of 16 a signed scale (make_q3_quants),
/// the scales as 6 bits under one half super-scale, the values requantized
/// to -4..3 (2 low bits in qs, the third in hmask).
void quantizeQ3K(const float *x, char *out) {
  auto *b = reinterpret_cast<uint8_t *>(out);
  uint8_t *hmask = b, *qs = b + 32, *sc = b + 96;
  int8_t L[kQKK];
  float scales[16];
  float maxScale = 0, amax = 0;
  for (int j = 0; j < 16; ++j) {
    scales[j] = makeQ3Quants(16, 4, x + 16 * j, L + 16 * j);
    const float scale = std::fabs(scales[j]);
    if (scale > amax) {
      amax = scale;
      maxScale = scales[j];
    }
  }
  std::memset(sc, 0, 12);
  if (maxScale != 0.0f) {
    const float iscale = -32.0f / maxScale;
    for (int j = 0; j < 16; ++j) {
      int8_t l = int8_t(nearestInt(iscale * scales[j]));
      l = int8_t(std::max<int>(-32, std::min<int>(31, l)) + 32);
      if (j < 8)
        sc[j] = uint8_t(l & 0xf);
      else
        sc[j - 8] |= uint8_t((l & 0xf) << 4);
      l = int8_t(l >> 4);
      sc[j % 4 + 8] |= uint8_t(l << (2 * (j / 4)));
    }
    putHalf(out + 108, 1 / iscale);
  } else {
    putHalf(out + 108, 0.0f);
  }
  const float d = ggml::halfAt(b + 108);
  for (int j = 0; j < 16; ++j) {
    const float dj = d * float(ggml::q3Scale(sc, j));
    if (dj == 0.0f)
      continue; // keeps make_q3_quants' L, as ggml does
    for (int ii = 0; ii < 16; ++ii) {
      const int l = nearestInt(x[16 * j + ii] / dj);
      L[16 * j + ii] = int8_t(std::max(-4, std::min(3, l)) + 4);
    }
  }
  // The high bit of value j goes to bit j / 32 of hmask[j % 32].
  std::memset(hmask, 0, 32);
  uint8_t low[kQKK];
  for (int j = 0; j < kQKK; ++j) {
    int l = L[j];
    if (l > 3) {
      hmask[j % 32] |= uint8_t(1u << (j / 32));
      l -= 4;
    }
    low[j] = uint8_t(l);
  }
  packTwoBits(low, qs);
}

} // namespace

bool loom::canQuantize(ggml::BlockType type) {
  switch (type) {
  case ggml::BlockType::Q8_0:
  case ggml::BlockType::Q4_0:
  case ggml::BlockType::Q2_K:
  case ggml::BlockType::Q3_K:
  case ggml::BlockType::Q4_K:
  case ggml::BlockType::Q5_K:
  case ggml::BlockType::Q6_K:
    return true;
  default:
    return false;
  }
}

void loom::quantizeBlocks(ggml::BlockType type, const void *values, uint64_t n,
                          std::vector<char> &out) {
  assert(canQuantize(type) && "no quantizer for this block type");
  const ggml::BlockFormat f = ggml::blockFormat(type);
  const size_t base = out.size();
  out.resize(base + n / uint64_t(f.values) * uint64_t(f.bytes));
  char *const first = out.data() + base;
  // Blocks are independent: quantized in parallel (the K quantizers search
  // dozens of trial scales per group), each into its own slot, so the bytes
  // do not depend on the threads.
  const uint64_t blocks = n / uint64_t(f.values);
  constexpr uint64_t kChunk = 256;
  llvm::parallelFor(0, (blocks + kChunk - 1) / kChunk, [&](size_t c) {
    for (uint64_t b = c * kChunk; b < std::min(blocks, (c + 1) * kChunk); ++b) {
      char *at = first + b * uint64_t(f.bytes);
      float xb[kQKK];
      std::memcpy(xb, static_cast<const char *>(values) + 4 * b * f.values,
                  sizeof(float) * size_t(f.values));
      switch (type) {
      case ggml::BlockType::Q8_0:
        quantizeQ8_0(xb, at);
        break;
      case ggml::BlockType::Q4_0:
        quantizeQ4_0(xb, at);
        break;
      case ggml::BlockType::Q2_K:
        quantizeQ2K(xb, at);
        break;
      case ggml::BlockType::Q3_K:
        quantizeQ3K(xb, at);
        break;
      case ggml::BlockType::Q4_K:
        quantizeQ45K(xb, at, false);
        break;
      case ggml::BlockType::Q5_K:
        quantizeQ45K(xb, at, true);
        break;
      case ggml::BlockType::Q6_K:
        quantizeQ6K(xb, at);
        break;
      default:
        break;
      }
    }
  });
}
