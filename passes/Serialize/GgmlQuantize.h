//===- GgmlQuantize.h - ggml's reference quantizers -------------*- C++ -*-===//
//
// f32 values to ggml's blocks (loom/ggml_blocks.h), as ggml's reference
// quantizers quantize_row_<type>_ref compute them, which is what llama.cpp's
// quantize tool writes when it has no importance matrix: the same blocks,
// byte for byte, from the same values (test/frontends/gguf/quantize.test
// checks that against ggml's own library). Every step follows ggml's
// arithmetic in f32, in its order, without fused multiply-adds
// (-ffp-contract=off), including its rounding idiom nearest_int (round to
// nearest even through the 1.5 * 2^23 trick). Values that are not finite
// make garbage blocks, as in ggml, but never undefined behaviour.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_PASSES_SERIALIZE_GGMLQUANTIZE_H
#define LOOM_PASSES_SERIALIZE_GGMLQUANTIZE_H

#include "loom/ggml_blocks.h"

#include <cstdint>
#include <vector>

namespace loom {

/// An f32 rounded to an IEEE half, to nearest even (overflow to infinity,
/// NaN kept), as ggml's GGML_FP32_TO_FP16.
uint16_t floatToHalf(float value);

/// Whether quantizeBlocks produces `type` (Q8_0, Q4_0, Q2_K..Q6_K).
bool canQuantize(ggml::BlockType type);

/// Appends the `n` f32 values at `values` (n a multiple of the type's
/// block; any alignment) to `out` as blocks of `type` (canQuantize).
void quantizeBlocks(ggml::BlockType type, const void *values, uint64_t n,
                    std::vector<char> &out);

} // namespace loom

#endif // LOOM_PASSES_SERIALIZE_GGMLQUANTIZE_H
