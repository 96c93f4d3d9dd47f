// Next-token sampling in the manner of llama2.c's run.c (argmax, multinomial,
// top-p), but deterministic where run.c is not: candidates of equal
// probability are ordered by id instead of by an unstable qsort, and the
// nucleus is exact even when run.c's speed-up cutoff would leave it empty.
#include "loom/sampler.h"

#include "loom/error.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace loom {
namespace {

// Any fixed nonzero value works: xorshift has the all-zero state as its only
// fixed point, so seed 0 must not be used as the state directly.
constexpr uint64_t kZeroSeedState = 0x9E3779B97F4A7C15ull;

} // namespace

Sampler::Sampler(int64_t vocab_size, float temperature, float top_p,
                 uint64_t seed)
    : vocab_size_(vocab_size), temperature_(temperature), top_p_(top_p),
      state_(seed != 0 ? seed : kZeroSeedState) {
  if (vocab_size <= 0 || vocab_size > std::numeric_limits<int32_t>::max())
    throw Error("sampler: vocab_size must be in [1, 2^31), got " +
                std::to_string(vocab_size));
  if (!std::isfinite(temperature) || temperature < 0.0f)
    throw Error("sampler: temperature must be finite and >= 0, got " +
                std::to_string(temperature));
  // Written so that NaN fails too.
  if (!(top_p > 0.0f && top_p <= 1.0f))
    throw Error("sampler: top_p must be in (0, 1], got " +
                std::to_string(top_p));
  if (temperature_ > 0.0f) {
    probs_.resize(static_cast<size_t>(vocab_size_));
    order_.reserve(static_cast<size_t>(vocab_size_));
  }
}

float Sampler::nextUniform() {
  // xorshift64*, the same stream and coin as run.c's random_f32. The top 24
  // bits of the product fill a float's mantissa exactly, so the result is a
  // multiple of 2^-24 strictly below 1.
  state_ ^= state_ >> 12;
  state_ ^= state_ << 25;
  state_ ^= state_ >> 27;
  uint64_t r = state_ * 0x2545F4914F6CDD1Dull;
  return static_cast<float>(r >> 40) * (1.0f / 16777216.0f);
}

void Sampler::checkLogits(const float *logits) const {
  if (logits == nullptr)
    throw Error("sampler: null logits");
  // A NaN logit means the forward pass is broken; picking a token from it
  // would hide that, so it is reported instead.
  for (int64_t i = 0; i < vocab_size_; ++i)
    if (std::isnan(logits[i]))
      throw Error("sampler: logit " + std::to_string(i) + " is NaN");
}

int32_t Sampler::argmax(const float *logits) const {
  // Strict '>' keeps the lowest id among equal maxima.
  int32_t best = 0;
  for (int32_t i = 1; i < static_cast<int32_t>(vocab_size_); ++i)
    if (logits[i] > logits[best])
      best = i;
  return best;
}

int32_t Sampler::sample(const float *logits) {
  checkLogits(logits);
  if (temperature_ == 0.0f)
    return argmax(logits);
  return draw(logits, nextUniform());
}

int32_t Sampler::sampleWithCoin(const float *logits, float coin) {
  checkLogits(logits);
  if (temperature_ == 0.0f)
    return argmax(logits);
  // Written so that NaN fails too.
  if (!(coin >= 0.0f && coin < 1.0f))
    throw Error("sampler: coin must be in [0, 1), got " + std::to_string(coin));
  return draw(logits, coin);
}

int32_t Sampler::draw(const float *logits, float coin) {
  const auto n = static_cast<int32_t>(vocab_size_);
  // Softmax of logits / temperature with the maximum subtracted. Entries equal
  // to the maximum get weight 1 directly, which keeps +inf logits (inf - inf)
  // and an all -inf row well defined.
  float max_value = -std::numeric_limits<float>::infinity();
  for (int32_t i = 0; i < n; ++i) {
    probs_[i] = logits[i] / temperature_;
    max_value = std::max(max_value, probs_[i]);
  }
  float sum = 0.0f;
  for (int32_t i = 0; i < n; ++i) {
    probs_[i] = probs_[i] == max_value ? 1.0f : std::exp(probs_[i] - max_value);
    sum += probs_[i];
  }
  for (int32_t i = 0; i < n; ++i)
    probs_[i] /= sum;

  if (top_p_ >= 1.0f || n == 1) {
    float cdf = 0.0f;
    int32_t last_positive = 0;
    for (int32_t i = 0; i < n; ++i) {
      if (probs_[i] <= 0.0f)
        continue;
      cdf += probs_[i];
      last_positive = i;
      if (coin < cdf)
        return i;
    }
    // Rounding left the total a little under 1 and the coin above it.
    return last_positive;
  }

  // Candidates go most likely first, lower id first among equals. As a heap
  // ordering that means "a sits below b" when b comes first.
  auto sitsBelow = [this](int32_t a, int32_t b) {
    if (probs_[a] != probs_[b])
      return probs_[a] < probs_[b];
    return a > b;
  };
  // Pops candidates off a heap of order_ until their mass exceeds top_p (or
  // the heap is empty). Popped ids collect at the back of order_, most likely
  // last, so the nucleus is order_[first, end) and costs O(m + k log m)
  // instead of a full sort of all m candidates.
  auto nucleus = [&](float &mass) {
    std::make_heap(order_.begin(), order_.end(), sitsBelow);
    auto heap_end = order_.end();
    mass = 0.0f;
    while (heap_end != order_.begin()) {
      std::pop_heap(order_.begin(), heap_end, sitsBelow);
      --heap_end;
      mass += probs_[*heap_end];
      if (mass > top_p_)
        break;
    }
    return static_cast<size_t>(heap_end - order_.begin());
  };

  // Candidates below (1 - top_p) / (n - 1) cannot be needed while the ones
  // above it already exceed top_p (run.c's shortcut), and usually most of the
  // vocabulary is below it.
  const float cutoff = (1.0f - top_p_) / static_cast<float>(n - 1);
  order_.clear();
  for (int32_t i = 0; i < n; ++i)
    if (probs_[i] >= cutoff)
      order_.push_back(i);
  float mass = 0.0f;
  size_t first = nucleus(mass);
  if (!(mass > top_p_) && order_.size() < static_cast<size_t>(n)) {
    // The survivors do not reach top_p (e.g. a near-uniform distribution with
    // a tiny top_p), so the nucleus reaches into the dropped tail.
    order_.resize(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i)
      order_[i] = i;
    first = nucleus(mass);
  }

  // Walk the nucleus from the most likely candidate down.
  float r = coin * mass;
  float cdf = 0.0f;
  int32_t last_positive = order_.back();
  for (size_t k = order_.size(); k-- > first;) {
    float p = probs_[order_[k]];
    if (p <= 0.0f)
      break; // Descending order: nothing after this has mass either.
    cdf += p;
    last_positive = order_[k];
    if (r < cdf)
      return order_[k];
  }
  return last_positive;
}

} // namespace loom
