// Next-token sampler: greedy (temperature 0), temperature, and nucleus (top-p)
// sampling, with a seeded xorshift64* generator so runs are reproducible.
#ifndef LOOM_SAMPLER_H
#define LOOM_SAMPLER_H

#include <cstdint>
#include <vector>

namespace loom {

class Sampler {
public:
  // temperature >= 0 (0 = greedy), 0 < top_p <= 1 (1 = no nucleus cut).
  // Throws loom::Error on out-of-range values.
  Sampler(int64_t vocab_size, float temperature, float top_p, uint64_t seed);

  // Picks the next id from raw logits (length vocab_size). Greedy picks the
  // argmax, lowest id on ties. Does not keep a pointer to `logits`.
  int32_t sample(const float *logits);

  // sample() with a coin drawn elsewhere (coin in [0, 1), e.g. from
  // nextUniform() before a device sampler handed the choice back to the
  // host); the generator does not advance. Greedy ignores the coin.
  int32_t sampleWithCoin(const float *logits, float coin);

  float temperature() const { return temperature_; }
  float topP() const { return top_p_; }
  // The next coin of the generator, in [0, 1): what sample() draws once per
  // non-greedy call. For samplers that run elsewhere (the CUDA backend).
  float nextUniform();

private:
  void checkLogits(const float *logits) const;
  int32_t argmax(const float *logits) const;
  int32_t draw(const float *logits, float coin);

  int64_t vocab_size_;
  float temperature_;
  float top_p_;
  uint64_t state_;
  std::vector<float> probs_;
  std::vector<int32_t> order_;
};

} // namespace loom

#endif // LOOM_SAMPLER_H
