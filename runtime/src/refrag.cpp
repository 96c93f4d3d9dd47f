// REFRAG sequence assembly and expansion policy (loom/refrag.h).
#include "loom/refrag.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>
#include <string>

namespace loom {

std::vector<std::vector<int32_t>> splitChunks(const std::vector<int32_t> &context,
                                              size_t k) {
  if (k == 0)
    throw Error("chunk size must be >= 1");
  std::vector<std::vector<int32_t>> chunks;
  for (size_t b = 0; b < context.size(); b += k)
    chunks.emplace_back(context.begin() + b,
                        context.begin() + std::min(context.size(), b + k));
  return chunks;
}

std::vector<size_t> expandedByPolicy(const std::vector<float> &scores,
                                     double p) {
  if (!(p >= 0.0 && p <= 1.0)) {
    std::ostringstream os;
    os << "expand fraction " << p << " is outside [0, 1]";
    throw Error(os.str());
  }
  const size_t n = scores.size();
  // ceil(p n), with p n = 4.000000001 (rounding noise) counting as 4.
  const double want = p * static_cast<double>(n);
  size_t count = static_cast<size_t>(std::ceil(want - 1e-9));
  count = std::min(count, n);
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t(0));
  // A NaN score ranks last (and keeps the sort's ordering strict).
  auto key = [&](size_t i) {
    return std::isnan(scores[i]) ? -INFINITY : scores[i];
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return key(a) > key(b); });
  order.resize(count);
  std::sort(order.begin(), order.end());
  return order;
}

namespace {

// assembleSequence / assembleChunks; `shape` ends the out-of-range message
// (" chunks of 8)").
AssembledSequence assemble(const std::vector<std::vector<int32_t>> &chunks,
                           const std::vector<int32_t> &question,
                           const std::vector<size_t> &expanded,
                           const float *projected, int64_t dim, int32_t bos_id,
                           const std::string &shape) {
  AssembledSequence s;
  s.n_chunks = chunks.size();
  s.row_elems = dim;
  std::vector<bool> is_expanded(chunks.size(), false);
  for (size_t c : expanded) {
    if (c >= chunks.size())
      throw Error("expanded chunk " + std::to_string(c) +
                  " is out of range (the context has " +
                  std::to_string(chunks.size()) + shape);
    if (is_expanded[c])
      throw Error("chunk " + std::to_string(c) + " is expanded twice");
    is_expanded[c] = true;
  }
  s.n_expanded = expanded.size();
  s.n_placeholders = chunks.size() - expanded.size();
  if (s.n_placeholders > 0 && (!projected || dim < 1))
    throw Error("assembleSequence: placeholders need the projected chunk "
                "rows");
  auto token = [&](int32_t t) {
    s.tokens.push_back(t);
    s.embeddings.push_back(nullptr);
    s.chunk.push_back(-1);
  };
  if (bos_id >= 0)
    token(bos_id);
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (chunks[i].empty())
      throw Error("assembleChunks: chunk " + std::to_string(i) +
                  " is empty");
    if (is_expanded[i]) {
      for (int32_t t : chunks[i])
        token(t);
    } else {
      s.tokens.push_back(0);
      s.embeddings.push_back(projected + static_cast<int64_t>(i) * dim);
      s.chunk.push_back(static_cast<int64_t>(i));
    }
  }
  for (int32_t t : question)
    token(t);
  return s;
}

} // namespace

AssembledSequence assembleSequence(const std::vector<int32_t> &context,
                                   const std::vector<int32_t> &question,
                                   size_t k,
                                   const std::vector<size_t> &expanded,
                                   const float *projected, int64_t dim,
                                   int32_t bos_id) {
  return assemble(splitChunks(context, k), question, expanded, projected, dim,
                  bos_id, " chunks of " + std::to_string(k) + ")");
}

AssembledSequence assembleChunks(const std::vector<std::vector<int32_t>> &chunks,
                                 const std::vector<int32_t> &question,
                                 const std::vector<size_t> &expanded,
                                 const float *projected, int64_t dim,
                                 int32_t bos_id) {
  return assemble(chunks, question, expanded, projected, dim, bos_id,
                  " chunks)");
}

RefragPrompt prepareRefrag(Session &session, const RefragRequest &request) {
  const Model &model = session.model();
  const RefragInfo *info = model.refrag();
  if (!info)
    throw Error("this artifact has no chunk encoder (compile with loomc "
                "--format=refrag)");
  if (request.context.empty())
    throw Error("the context is empty (REFRAG needs at least one context "
                "token)");
  const size_t k = request.chunk_size ? request.chunk_size
                                      : static_cast<size_t>(info->max_chunk_len);
  if (k > static_cast<size_t>(info->max_chunk_len))
    throw Error("chunk size " + std::to_string(k) + " is out of range (1.." +
                std::to_string(info->max_chunk_len) +
                ", the encoder's max_chunk_len)");
  if (request.expand_fraction && !request.expanded.empty())
    throw Error("give either the expanded chunks or an expand fraction, not "
                "both");

  RefragPrompt p;
  p.chunk_size = k;
  p.chunks = splitChunks(request.context, k);
  const size_t n = p.chunks.size();
  const int64_t E = info->encoder_dim;
  p.chunk_embeddings.reserve(n * static_cast<size_t>(E));
  for (const std::vector<int32_t> &c : p.chunks) {
    std::vector<float> e = session.encodeChunk(c.data(), c.size());
    p.chunk_embeddings.insert(p.chunk_embeddings.end(), e.begin(), e.end());
  }
  p.projected = session.projectChunks(p.chunk_embeddings.data(), n);
  if (request.expand_fraction) {
    p.scores = session.scoreChunks(p.chunk_embeddings.data(), n);
    p.expanded = expandedByPolicy(p.scores, *request.expand_fraction);
  } else {
    p.expanded = request.expanded;
  }
  p.sequence = assembleSequence(request.context, request.question, k,
                                p.expanded, p.projected.data(),
                                info->projected_dim, model.config().bos_id);
  std::sort(p.expanded.begin(), p.expanded.end());
  return p;
}

} // namespace loom
