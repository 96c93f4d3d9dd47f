//===- RopeScaling.h - RoPE context extensions as frequency factors -------===//
//
// Linear and YaRN RoPE scaling, written as what Loom's rope takes: a divisor
// per pair of each frequency (Config::ropeFreqFactors) and a scale of the
// rotation's cos and sin (Config::ropeScale). Shared by the Hugging Face
// (rope_scaling) and GGUF (rope.scaling.*) frontends.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_FRONTENDS_LLAMA2C_ROPESCALING_H
#define LOOM_FRONTENDS_LLAMA2C_ROPESCALING_H

#include "frontends/llama2c/Llama2cImporter.h"

namespace loom::llama2c {

/// Linear scaling ("linear"; llama.cpp's freq_scale = 1 / factor): positions
/// divided by `factor`, i.e. every pair's frequency.
void linearRopeScaling(Config &c, double factor);

/// YaRN's attention factor for a context stretched `factor` times:
/// 0.1 mscale ln(factor) + 1, or 1 where factor <= 1 (transformers'
/// get_mscale; llama.cpp's rope_yarn).
double yarnMscale(double factor, double mscale = 1.0);

/// YaRN (transformers' _compute_yarn_parameters, llama.cpp's rope_yarn):
/// pairs that turn fewer than beta_slow times over `originalContext`
/// positions are interpolated (frequency / factor), those that turn more
/// than beta_fast times kept, a linear ramp between (its ends rounded
/// outwards to whole pairs); the rotation scaled by `attentionFactor`.
void yarnRopeScaling(Config &c, double factor, double originalContext,
                     double betaFast, double betaSlow, double attentionFactor);

/// LongRoPE's attention factor for a context stretched `factor` times over
/// `originalContext`: sqrt(1 + ln(factor) / ln(originalContext)), or 1
/// where factor <= 1 (transformers' _compute_longrope_parameters).
double longRopeAttentionFactor(double factor, double originalContext);

} // namespace loom::llama2c

#endif // LOOM_FRONTENDS_LLAMA2C_ROPESCALING_H
