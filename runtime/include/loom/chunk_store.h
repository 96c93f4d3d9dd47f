// REFRAG chunk store: a corpus of passages encoded once (chunk embeddings
// and their projections), read back by mmap at query time so a query runs
// no encoder. See docs/chunk-placeholders.md, "Chunk store".
//
// Typical use:
//   loom::ChunkStore::write("corpus.chunks", model, passages, 8);   // once
//   loom::ChunkStore store = loom::ChunkStore::open("corpus.chunks");
//   store.checkCompatible(*model, 8);
//   loom::ChunkStoreRequest req;
//   req.passages = {0, 3, 7}; req.question = ...; req.expand_fraction = 0.25;
//   loom::RefragPrompt p = loom::prepareRefrag(session, store, req);
//   session.forward(p.sequence.tokens.data(), p.sequence.tokens.size(),
//                   false, p.sequence.embeddings.data(), p.sequence.row_elems);
#ifndef LOOM_CHUNK_STORE_H
#define LOOM_CHUNK_STORE_H

#include "loom/refrag.h"
#include "loom/runtime.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace loom {

// The file's fixed header (192 bytes, little-endian; the layout is in
// docs/chunk-placeholders.md).
struct ChunkStoreHeader {
  char magic[8];              // "LOOMCHNK"
  uint32_t format_version;    // kChunkStoreVersion
  uint32_t header_size;       // sizeof(ChunkStoreHeader)
  uint64_t file_size;         // bytes of the whole file
  uint64_t encoder_checksum;  // RefragInfo::encoder_checksum of the encoder
  uint64_t projector_checksum; // chunkProjectorChecksum() of the projector
  uint32_t chunk_size;        // k: tokens per chunk (the last may be short)
  uint32_t encoder_dim;       // floats per chunk embedding
  uint32_t projected_dim;     // floats per placeholder row (RefragInfo::projected_dim)
  uint32_t vocab_size;        // the decoder vocabulary the ids index
  int32_t cls_token_id;       // the encoder's CLS id
  uint32_t reserved0;         // 0
  uint64_t n_passages;
  uint64_t n_chunks;          // all passages'
  uint64_t n_tokens;          // all passages'
  uint64_t table_offset;      // the passage table (ChunkStorePassageEntry[])
  uint64_t tokens_offset;     // int32 ids [n_tokens]
  uint64_t embeddings_offset; // float [n_chunks, encoder_dim]
  uint64_t projected_offset;  // float [n_chunks, projected_dim]
  uint64_t table_checksum;    // loomChecksum64 of the table
  uint64_t reserved[7];       // 0
  uint64_t header_checksum;   // loomChecksum64 of the 184 bytes before it
};
static_assert(sizeof(ChunkStoreHeader) == 192, "chunk store header is 192 bytes");

// One passage in the table (32 bytes). Passages are laid out in order:
// token_begin and chunk_begin are the sums over the passages before.
struct ChunkStorePassageEntry {
  uint64_t token_begin; // first id in the tokens section
  uint64_t chunk_begin; // first row in the embeddings / projected sections
  uint32_t n_tokens;
  uint32_t n_chunks;    // ceil(n_tokens / chunk_size)
  // loomChecksum64 of the three loomChecksum64s of its ids, embedding rows
  // and projected rows (in that order, as 3 x uint64).
  uint64_t checksum;
};
static_assert(sizeof(ChunkStorePassageEntry) == 32, "passage entry is 32 bytes");

constexpr char kChunkStoreMagic[8] = {'L', 'O', 'O', 'M', 'C', 'H', 'N', 'K'};
constexpr uint32_t kChunkStoreVersion = 1;

// Identifies the artifact's projector (project_chunk): loomChecksum64 over,
// for each dispatch in order, its kernel, iparams and fparams (as uint64;
// floats by their bits) and the loomChecksum64 of each weight tensor it
// reads first. A store holds projected rows, so it also records this.
// Throws loom::Error for a model without a chunk encoder.
uint64_t chunkProjectorChecksum(const Model &model);

struct ChunkStoreWriteOptions {
  // Worker threads (each runs its own single-threaded Session); 0 = all.
  int threads = 0;
  // Called on the calling thread: once with (0, total) before encoding, then
  // after each batch of passages with the chunks encoded so far. An
  // exception it throws aborts the write (nothing is left on disk) and
  // propagates.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

// A verified, read-only, memory-mapped chunk store.
class ChunkStore {
public:
  // Encodes every passage (decoder token ids without BOS, e.g.
  // Tokenizer::encode(line, false, false); an empty passage has no chunks)
  // and writes the store to `path` atomically: into path + ".tmp", fsync,
  // rename. Each passage is chunked on its own (chunks never straddle
  // passages); its chunks are encoded in parallel (encodeChunk) and
  // projected with one projectChunks call per passage, so the rows are
  // bit-equal to prepareRefrag's for that passage as the context.
  // chunk_size 0 = the encoder's max_chunk_len. Throws loom::Error (after
  // removing the temporary file) for a model without a chunk encoder, a
  // chunk size out of range, ids outside the vocabulary, or an I/O error.
  static void write(const std::string &path,
                    const std::shared_ptr<const Model> &model,
                    const std::vector<std::vector<int32_t>> &passages,
                    size_t chunk_size,
                    const ChunkStoreWriteOptions &options = {});

  // Maps `path` and verifies the header (magic, version, sizes, checksum),
  // the section offsets, the passage table (checksum and consistency).
  // Passage data is verified when read (passage()), or all at once by
  // verifyData(). Throws loom::Error: "cannot open chunk store 'P': ...",
  // "'P' is not a Loom chunk store ...", "chunk store 'P' is truncated ...",
  // "chunk store 'P' is corrupt: ...", "chunk store 'P' has format version N
  // ...".
  static ChunkStore open(const std::string &path);

  ChunkStore(ChunkStore &&) noexcept;
  ChunkStore &operator=(ChunkStore &&) noexcept;
  ~ChunkStore();

  // Refuses (loom::Error) a store made for another encoder (checksum, CLS
  // id or width), projector, decoder width or vocabulary than the model's,
  // and, when chunk_size != 0, one made with another chunk size ("chunk
  // store 'P' was made with chunk size 8, not 16").
  void checkCompatible(const Model &model, size_t chunk_size = 0) const;

  // One passage, pointing into the mapping. Verifies its checksum and ids
  // (loom::Error "chunk store 'P' is corrupt: passage 3 ...") and the index
  // ("passage 9 is out of range (the store has 8 passages, 0..7)").
  struct Passage {
    const int32_t *tokens = nullptr;
    size_t n_tokens = 0;
    size_t n_chunks = 0;
    const float *embeddings = nullptr; // [n_chunks, encoderDim()]
    const float *projected = nullptr;  // [n_chunks, projectedDim()]
  };
  Passage passage(size_t index) const;
  // Verifies every passage's data (reads the whole file).
  void verifyData() const;

  const std::string &path() const;
  const ChunkStoreHeader &header() const;
  size_t chunkSize() const;
  int64_t encoderDim() const;
  int64_t projectedDim() const;
  uint64_t encoderChecksum() const;
  uint64_t projectorChecksum() const;
  size_t passageCount() const;
  size_t chunkCount() const;
  size_t tokenCount() const;
  uint64_t fileSize() const;

private:
  struct Impl;
  explicit ChunkStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A query over a chunk store: the context is the listed passages' ids
// concatenated in this order; their chunks, each passage chunked on its
// own, are numbered in that order too.
struct ChunkStoreRequest {
  std::vector<size_t> passages;  // at least one; no repeats
  std::vector<int32_t> question; // the prompt after the context, no BOS
  // As RefragRequest: explicit expanded chunks (indices into the
  // concatenated chunk list), or the policy's fraction, not both.
  std::vector<size_t> expanded;
  std::optional<double> expand_fraction;
};

// prepareRefrag over stored chunks: the placeholder rows are the store's
// projected rows and the policy scores the stored embeddings (scoreChunks);
// no encoder runs. Checks store.checkCompatible(model) first. chunk_size is
// the store's; RefragPrompt::chunks lists the chunks (a passage's last one
// may be short).
RefragPrompt prepareRefrag(Session &session, const ChunkStore &store,
                           const ChunkStoreRequest &request);

} // namespace loom

#endif // LOOM_CHUNK_STORE_H
