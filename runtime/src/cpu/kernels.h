// CPU kernels of the dispatch form. Row-major f32 activations throughout;
// weight matrices and tables f32, bf16, f16 or ggml's blocks (Weights). Every
// kernel parallelises internally with oneTBB (call it inside the session's
// tbb::task_arena to bound the threads) and dispatches at run time to an
// AVX-512 implementation where the CPU has it, else an AVX2 (+ FMA, F16C)
// one, else a portable one.
#ifndef LOOM_RUNTIME_CPU_KERNELS_H
#define LOOM_RUNTIME_CPU_KERNELS_H

#include <cstdint>

namespace loom::rt::cpu {

// In order: each one's CPUs have the ones before it.
enum class Isa { Portable, Avx2, Avx512 };

// Best ISA this CPU supports (cpuid + OS support for the ymm/zmm state).
Isa detectIsa();
// The ISA kernels use now; starts as detectIsa(), capped by the environment
// variable LOOM_ISA (portable, avx2 or avx512: that ISA, or the best below
// it the CPU has; other values are ignored).
Isa activeIsa();
// Force an ISA (tests compare them). Returns false, changing nothing, if the
// CPU lacks it.
bool setIsa(Isa isa);
const char *isaName(Isa isa);
// Whether GEMMs of bf16 weights with bf16 activations use vdpbf16ps: the
// active ISA is AVX-512 and the CPU has AVX512_BF16.
bool bf16DotProducts();

// A weight matrix or table as the artifact stores it: f32 values, bf16
// values (the upper halves of f32s, so widening one is exact), IEEE halves,
// or ggml's blocks (Q8_0, Q4_0, Q2_K..Q6_K, loom/ggml_blocks.h: every value
// exactly an f32; rows are whole blocks). The kernels read bf16 and Q8_0
// weights as they are and decode them in registers: the result is bit for bit
// the one of the decoded f32 matrix (bf16 in long steps aside, see matmul),
// with a half or about a quarter of the bytes read.
struct Weights {
  // The block encodings are ggml's (loom/ggml_blocks.h); the K formats
  // (Q2_K..Q6_K) need K a multiple of 256.
  enum class Encoding {
    F32,
    BF16,
    Q8_0,
    Q4_0,
    F16,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K
  };
  Weights() = default;
  Weights(const float *p) : data(p) {}
  Weights(const uint16_t *p) : data(p), encoding(Encoding::BF16) {}
  Weights(const uint8_t *q8_0_blocks)
      : data(q8_0_blocks), encoding(Encoding::Q8_0) {}
  static Weights f16(const uint16_t *halves) {
    Weights w(halves);
    w.encoding = Encoding::F16;
    return w;
  }
  static Weights q4_0(const uint8_t *blocks) {
    return Weights::blocks(Encoding::Q4_0, blocks);
  }
  // Blocks of one of the block encodings.
  static Weights blocks(Encoding encoding, const uint8_t *data) {
    Weights w(data);
    w.encoding = encoding;
    return w;
  }
  // The values of f32 weights (null for the others).
  const float *f32() const {
    return encoding == Encoding::F32 ? static_cast<const float *>(data)
                                     : nullptr;
  }
  bool bf16() const { return encoding == Encoding::BF16; }
  bool q8_0() const { return encoding == Encoding::Q8_0; }
  bool q4_0() const { return encoding == Encoding::Q4_0; }
  bool f16() const { return encoding == Encoding::F16; }
  // One of ggml's block formats (Q8_0, Q4_0, the K formats).
  bool blockEncoded() const {
    return encoding == Encoding::Q8_0 || encoding == Encoding::Q4_0 ||
           encoding >= Encoding::Q2_K;
  }
  const void *data = nullptr;
  Encoding encoding = Encoding::F32;
};

// out[t, :] = table[tokens[t], :] * scale; tokens already range-checked by
// the caller. With scale 1 the rows are copied (widened) exactly.
void embed(const int32_t *tokens, int64_t T, Weights table, int64_t D,
           float *out, float scale = 1.0f);

// y[t, :] = [a[t, 0..na), b[t, 0..nb)]; rows are dense (y's stride is
// na + nb).
void concatRows(const float *a, int64_t na, const float *b, int64_t nb,
                float *y, int64_t T);

// y[t, 0..cols) = x[t, 0..cols) + bias; y may alias x.
void addRowBias(const float *x, int64_t ldx, const float *bias, float *y,
                int64_t ldy, int64_t T, int64_t cols);

// y[t, :] = w * x[t, :] / sqrt(mean(x[t, :]^2) + eps)
void rmsNorm(const float *x, const float *w, float *y, int64_t T, int64_t D,
             float eps);

// With bf16 weights, a product of more than this many rows (T, per call:
// a step's rows, or the rows whose logits are wanted) multiplies them by the
// activations rounded to bf16 (nearest even), accumulating in f32, as the
// CUDA backend's cuBLAS path does; products of up to this many rows keep the
// activations f32 (bit for bit the widened matrix's product).
constexpr int64_t kBf16F32ActivationRows = 8;

// y[t, n] (+)= sum_k x[t, k] * W[n, k]   for t < T, n < N.
// x has row stride ldx, y row stride ldy, W is dense [N, K]. For bf16 W and
// T > kBf16F32ActivationRows, x[t, k] is rounded to bf16 first.
void matmul(const float *x, int64_t ldx, Weights W, float *y, int64_t ldy,
            int64_t T, int64_t K, int64_t N, bool accumulate);

// In place, llama2.c semantics: for each row t (position start_pos + t) and
// each head-local pair index j = 0, 2, 4, ... < head_dim over the first
// `cols` columns: freq = 1 / powf(theta, j / head_dim) in float32 (divided
// by freq_factors[j / 2] where given), angle = pos * freq in float32,
// (x0, x1) <- (x0 c - x1 s, x0 s + x1 c).
// `scale` multiplies every cos and sin (YaRN's attention factor; 1: none).
void rope(float *x, int64_t ldx, int64_t T, int64_t cols, int64_t head_dim,
          int64_t start_pos, float theta, const float *freq_factors,
          float scale);

// One layer's KV cache: rows [max_seq, kv_dim] for K and for V.
struct KvView {
  float *k;
  float *v;
  int64_t max_seq;
  int64_t kv_dim; // n_kv_heads * head_dim
};

// Causal grouped-query attention. First writes rows k[t], v[t] into the cache
// at position start_pos + t, then for each row t and head h:
// out[t, h] = softmax(q[t,h] . K[0..p, g]^T / sqrt(head_dim)) V[0..p, g]
// with p = start_pos + t and g = h / (n_heads / n_kv_heads). With a window
// W > 0 (sliding-window attention) row t sees only the positions
// max(0, p - W + 1) .. p; window 0: every position. A row's result is bit
// for bit the same whichever step it is fed in.
void attention(const float *q, int64_t ldq, const float *k, int64_t ldk,
               const float *v, int64_t ldv, float *out, int64_t ldo, int64_t T,
               int64_t start_pos, int64_t n_heads, int64_t n_kv_heads,
               int64_t head_dim, KvView cache, int64_t window);

// Causal attention over K/V rows that do not sit in one array (the caches
// of a looped block, see session.cpp). k_rows[p] and v_rows[p], for positions
// p < start_pos + T, point at position p's kv_dim = n_kv_heads * head_dim
// values, or are null where the position is absent. Row t (position
// start_pos + t) attends to the present positions p <= start_pos + t, in
// position order, exactly as attention() does over a full cache; a row with
// no present position outputs zeros. The caller writes the rows' own K/V
// first. A window W > 0 leaves out the positions before p - W + 1, as
// attention()'s does.
void attentionRows(const float *q, int64_t ldq, float *out, int64_t ldo,
                   int64_t T, int64_t start_pos, int64_t n_heads,
                   int64_t n_kv_heads, int64_t head_dim,
                   const float *const *k_rows, const float *const *v_rows,
                   int64_t window);

// y = silu(a) * b = a / (1 + exp(-a)) * b, elementwise over n values.
void siluMul(const float *a, const float *b, float *y, int64_t n);

// y = a + b, elementwise over n values (y may alias a or b).
void add(const float *a, const float *b, float *y, int64_t n);

// --- Encoder kernels (REFRAG chunk encoder and projector) ---------------
// A linear layer with bias is matmul() followed by addRowBias() in place.

// y[t, :] = (x[t, :] - mean) / sqrt(var + eps) * w + b, with mean and the
// population (biased) variance over the D values of row t. Rows are dense;
// y may alias x.
void layerNorm(const float *x, const float *w, const float *b, float *y,
               int64_t T, int64_t D, float eps);

// y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), elementwise over n
// values (PyTorch's approximate="tanh"); y may alias x. Evaluated as the
// equal x / (1 + exp(-2 sqrt(2/pi) (x + 0.044715 x^3))), which keeps its
// relative accuracy for negative x and gives -0 where the result underflows.
void geluTanh(const float *x, float *y, int64_t n);

// Bidirectional multi-head attention over T rows: no mask, no cache. For
// each row t and head a (columns a*head_dim .. (a+1)*head_dim - 1 of q, k,
// v and out):
// out[t, a] = softmax_s(q[t, a] . k[s, a] / sqrt(head_dim)) v[s, a], s < T.
// out must not overlap q, k or v.
void selfAttention(const float *q, int64_t ldq, const float *k, int64_t ldk,
                   const float *v, int64_t ldv, float *out, int64_t ldo,
                   int64_t T, int64_t n_heads, int64_t head_dim);

// y[t, :] += table[t, :] for t < T (learned position embeddings: rows
// 0..T-1 of a [max_pos, D] table). Both dense with row stride D; exact.
void addRows(Weights table, float *y, int64_t T, int64_t D);

} // namespace loom::rt::cpu

#endif // LOOM_RUNTIME_CPU_KERNELS_H
