//===- RopeScaling.cpp - RoPE context extensions as frequency factors -----===//
#include "frontends/llama2c/RopeScaling.h"

#include <algorithm>
#include <cmath>

using namespace loom;

void llama2c::linearRopeScaling(Config &c, double factor) {
  c.ropeFreqFactors.assign(size_t(c.headDim() / 2), float(factor));
}

double llama2c::yarnMscale(double factor, double mscale) {
  return factor <= 1.0 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
}

double llama2c::longRopeAttentionFactor(double factor, double originalContext) {
  return factor <= 1.0
             ? 1.0
             : std::sqrt(1.0 + std::log(factor) / std::log(originalContext));
}

void llama2c::yarnRopeScaling(Config &c, double factor, double originalContext,
                              double betaFast, double betaSlow,
                              double attentionFactor) {
  const double dim = double(c.headDim()), base = double(c.ropeTheta);
  // The pair index that turns `rotations` times over the original context.
  auto pairTurning = [&](double rotations) {
    return dim * std::log(originalContext / (rotations * 2 * M_PI)) /
           (2 * std::log(base));
  };
  const double low = std::max(0.0, std::floor(pairTurning(betaFast)));
  double high = std::min(dim - 1, std::ceil(pairTurning(betaSlow)));
  if (high == low)
    high += 0.001;
  c.ropeFreqFactors.clear();
  for (int64_t i = 0; i < c.headDim() / 2; ++i) {
    // 1 keeps the pair's frequency (extrapolation), 0 divides it by factor.
    const double ramp = std::clamp((double(i) - low) / (high - low), 0.0, 1.0);
    const double keep = 1.0 - ramp;
    c.ropeFreqFactors.push_back(float(1.0 / ((1.0 - keep) / factor + keep)));
  }
  c.ropeScale = float(attentionFactor);
}
