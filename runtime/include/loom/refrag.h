// REFRAG (compressed chunk placeholders, arXiv 2509.01092) on top of the
// session: a retrieved context is cut into chunks of k tokens, each chunk is
// encoded into one vector and projected to the decoder's embedding width,
// and the decoder reads ONE position per compressed chunk; a policy (or the
// caller) picks chunks to "expand", i.e. feed as their raw tokens in place.
// See docs/chunk-placeholders.md.
//
// Typical use:
//   loom::RefragRequest req;
//   req.context = ...; req.question = ...; req.chunk_size = 8;
//   req.expand_fraction = 0.25;                 // or req.expanded = {0, 2}
//   loom::RefragPrompt p = loom::prepareRefrag(session, req);
//   loom::Logits l = session.forward(p.sequence.tokens.data(),
//                                    p.sequence.tokens.size(), false,
//                                    p.sequence.embeddings.data(),
//                                    p.sequence.row_elems);
#ifndef LOOM_REFRAG_H
#define LOOM_REFRAG_H

#include "loom/runtime.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace loom {

// Chunks of a context: context[0:k], context[k:2k], ...; the last may be
// short. Throws loom::Error for k == 0.
std::vector<std::vector<int32_t>> splitChunks(const std::vector<int32_t> &context,
                                              size_t k);

// The expansion policy: the ceil(p * n) highest of the n scores (ties: the
// lower chunk index first), returned in chunk order. p in [0, 1] (throws
// loom::Error otherwise); ceil is taken of p * n in double, after removing
// rounding noise below 1e-9 (so p = 0.25, n = 16 expands exactly 4).
std::vector<size_t> expandedByPolicy(const std::vector<float> &scores,
                                     double p);

// The decoder input of a REFRAG request, one entry per decoder position.
struct AssembledSequence {
  // Token ids; 0 at placeholder positions (Session::forward ignores them).
  std::vector<int32_t> tokens;
  // For Session::forward: the chunk's projected row at placeholder
  // positions, null at token positions. Points into the `projected` rows
  // given to assembleSequence.
  std::vector<const float *> embeddings;
  // Floats per placeholder row (the `dim` given to assembleSequence), for
  // Session::forward's row_elems.
  int64_t row_elems = 0;
  // The chunk of a placeholder position, -1 at token positions.
  std::vector<int64_t> chunk;
  size_t n_chunks = 0;       // chunks of the context
  size_t n_expanded = 0;     // fed as raw tokens
  size_t n_placeholders = 0; // fed as one position each
};

// [BOS] + for each chunk in order: its tokens if it is in `expanded`, else
// one placeholder position (row i of `projected`) + the question tokens.
// Chunks as splitChunks(context, k). `expanded`: chunk indices in any
// order, each < the number of chunks, no duplicates (loom::Error otherwise).
// `projected`: one row of `dim` floats per chunk, chunk order (the model
// dim, or RefragInfo::projected_dim for projectChunks' rows); it must
// outlive the result, and may be null when every chunk is expanded.
// bos_id < 0: no BOS position.
AssembledSequence assembleSequence(const std::vector<int32_t> &context,
                                   const std::vector<int32_t> &question,
                                   size_t k,
                                   const std::vector<size_t> &expanded,
                                   const float *projected, int64_t dim,
                                   int32_t bos_id);

// The same over chunks given one by one (e.g. a chunk store's passages,
// each chunked on its own): [BOS] + for each chunk its tokens if it is in
// `expanded`, else one placeholder position (row i of `projected`) + the
// question tokens. Chunks must not be empty.
AssembledSequence assembleChunks(const std::vector<std::vector<int32_t>> &chunks,
                                 const std::vector<int32_t> &question,
                                 const std::vector<size_t> &expanded,
                                 const float *projected, int64_t dim,
                                 int32_t bos_id);

// One REFRAG request for prepareRefrag.
struct RefragRequest {
  std::vector<int32_t> context;  // the retrieved passage, no BOS, not empty
  std::vector<int32_t> question; // the prompt after it, no BOS (may be empty)
  // k, 1..max_chunk_len; 0 = the encoder's max_chunk_len.
  size_t chunk_size = 0;
  // Chunks fed as raw tokens: these (any order), or, with expand_fraction,
  // the policy's choice (expandedByPolicy over the score_chunk scores).
  // Giving both is an error; neither compresses every chunk.
  std::vector<size_t> expanded;
  std::optional<double> expand_fraction;
};

// Everything prepareRefrag computed. Move-only: sequence.embeddings points
// into `projected`.
struct RefragPrompt {
  size_t chunk_size = 0;
  std::vector<std::vector<int32_t>> chunks;
  std::vector<float> chunk_embeddings; // [n_chunks, encoder_dim]
  std::vector<float> projected;        // [n_chunks, projected_dim]
  std::vector<float> scores;  // [n_chunks], only with expand_fraction
  std::vector<size_t> expanded; // in chunk order
  AssembledSequence sequence;

  RefragPrompt() = default;
  RefragPrompt(RefragPrompt &&) = default;
  RefragPrompt &operator=(RefragPrompt &&) = default;
  RefragPrompt(const RefragPrompt &) = delete;
  RefragPrompt &operator=(const RefragPrompt &) = delete;
};

// Encodes every chunk (Session::encodeChunk), projects all of them
// (projectChunks), scores them when the request asks for the policy
// (scoreChunks), picks the expanded chunks and assembles the sequence with
// the model's BOS. Leaves the KV caches and the position alone. Throws
// loom::Error for a model without a chunk encoder, an empty context, a
// chunk size out of range, or a bad expansion.
RefragPrompt prepareRefrag(Session &session, const RefragRequest &request);

} // namespace loom

#endif // LOOM_REFRAG_H
