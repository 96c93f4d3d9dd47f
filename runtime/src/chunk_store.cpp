// REFRAG chunk store (loom/chunk_store.h): writing a corpus's chunk
// embeddings and projections once, mapping and verifying them at query time.
#include "loom/chunk_store.h"

#include "artifact.h"
#include "loom/artifact_format.h"
#include "loom/error.h"

#include <tbb/blocked_range.h>
#include <tbb/info.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the chunk store is read and written as little-endian");

namespace loom {
namespace {

constexpr uint64_t kAlign = 64;
// Bytes the header checksum covers: everything before the checksum itself.
constexpr size_t kHeaderChecksummed = offsetof(ChunkStoreHeader, header_checksum);

std::string hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%016" PRIx64, v);
  return buf;
}

// Section offsets of a store, the same for the writer and the reader.
struct Layout {
  uint64_t table = 0, tokens = 0, embeddings = 0, projected = 0, end = 0;
};

bool mulOk(uint64_t a, uint64_t b, uint64_t &r) {
  return !__builtin_mul_overflow(a, b, &r);
}
bool addOk(uint64_t a, uint64_t b, uint64_t &r) {
  return !__builtin_add_overflow(a, b, &r);
}
bool alignOk(uint64_t v, uint64_t &r) {
  if (!addOk(v, kAlign - 1, r))
    return false;
  r = r / kAlign * kAlign;
  return true;
}

// False when the sizes overflow 64 bits.
bool computeLayout(uint64_t n_passages, uint64_t n_tokens, uint64_t n_chunks,
                   uint64_t E, uint64_t D, Layout &l) {
  uint64_t bytes = 0, end = 0;
  l.table = alignUp(sizeof(ChunkStoreHeader), kAlign);
  return mulOk(n_passages, sizeof(ChunkStorePassageEntry), bytes) &&
         addOk(l.table, bytes, end) && alignOk(end, l.tokens) &&
         mulOk(n_tokens, sizeof(int32_t), bytes) &&
         addOk(l.tokens, bytes, end) && alignOk(end, l.embeddings) &&
         mulOk(n_chunks, E, bytes) && mulOk(bytes, sizeof(float), bytes) &&
         addOk(l.embeddings, bytes, end) && alignOk(end, l.projected) &&
         mulOk(n_chunks, D, bytes) && mulOk(bytes, sizeof(float), bytes) &&
         addOk(l.projected, bytes, l.end);
}

uint64_t passageChecksum(const int32_t *tokens, size_t n_tokens,
                         const float *emb, const float *proj, size_t n_chunks,
                         int64_t E, int64_t D) {
  const uint64_t sums[3] = {
      loomChecksum64(tokens, n_tokens * sizeof(int32_t)),
      loomChecksum64(emb, n_chunks * static_cast<size_t>(E) * sizeof(float)),
      loomChecksum64(proj, n_chunks * static_cast<size_t>(D) * sizeof(float))};
  return loomChecksum64(sums, sizeof sums);
}

const RefragInfo &refragInfo(const Model &model) {
  const RefragInfo *info = model.refrag();
  if (!info)
    throw Error("this artifact has no chunk encoder (compile with loomc "
                "--format=refrag)");
  return *info;
}

// ---- Writing ---------------------------------------------------------------

// The temporary file of a write: removed unless committed.
class TempOutput {
public:
  TempOutput(std::string final_path)
      : final_(std::move(final_path)), tmp_(final_ + ".tmp") {
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0)
      fail();
  }
  ~TempOutput() {
    if (fd_ >= 0)
      ::close(fd_);
    if (!committed_)
      ::unlink(tmp_.c_str());
  }
  TempOutput(const TempOutput &) = delete;
  TempOutput &operator=(const TempOutput &) = delete;

  [[noreturn]] void fail(const std::string &what = "") const {
    throw Error("cannot write chunk store '" + tmp_ + "': " +
                (what.empty() ? "" : what + ": ") + std::strerror(errno));
  }
  void resize(uint64_t bytes) {
    if (::ftruncate(fd_, static_cast<off_t>(bytes)) != 0)
      fail();
  }
  void writeAt(uint64_t offset, const void *data, size_t bytes) {
    const char *p = static_cast<const char *>(data);
    while (bytes > 0) {
      ssize_t n = ::pwrite(fd_, p, bytes, static_cast<off_t>(offset));
      if (n < 0) {
        if (errno == EINTR)
          continue;
        fail();
      }
      if (n == 0) {
        errno = EIO;
        fail();
      }
      p += n;
      bytes -= static_cast<size_t>(n);
      offset += static_cast<uint64_t>(n);
    }
  }
  // fsync, close, rename over the destination, fsync the directory.
  void commit() {
    if (::fsync(fd_) != 0)
      fail("fsync");
    int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0)
      fail("close");
    if (::rename(tmp_.c_str(), final_.c_str()) != 0)
      throw Error("cannot write chunk store '" + final_ + "': rename from '" +
                  tmp_ + "': " + std::strerror(errno));
    committed_ = true;
    // Make the rename itself durable; a failure here loses nothing written.
    std::string dir = final_;
    size_t slash = dir.find_last_of('/');
    dir = slash == std::string::npos ? "." : slash == 0 ? "/" : dir.substr(0, slash);
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }

private:
  std::string final_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

// Single-threaded sessions for the workers, one per concurrently running
// task (a Session is not thread-safe).
class SessionPool {
public:
  explicit SessionPool(std::shared_ptr<const Model> model)
      : model_(std::move(model)) {}

  class Lease {
  public:
    Lease(SessionPool &pool, std::unique_ptr<Session> s)
        : pool_(pool), s_(std::move(s)) {}
    ~Lease() { pool_.release(std::move(s_)); }
    Session &operator*() { return *s_; }
    Session *operator->() { return s_.get(); }

  private:
    SessionPool &pool_;
    std::unique_ptr<Session> s_;
  };

  Lease acquire() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        std::unique_ptr<Session> s = std::move(free_.back());
        free_.pop_back();
        return Lease(*this, std::move(s));
      }
    }
    SessionOptions o;
    o.threads = 1;
    return Lease(*this, std::make_unique<Session>(model_, o));
  }

private:
  void release(std::unique_ptr<Session> s) {
    if (!s)
      return;
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(std::move(s));
  }

  std::shared_ptr<const Model> model_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Session>> free_;
};

} // namespace

uint64_t chunkProjectorChecksum(const Model &model) {
  const rt::ModelData &m = model.data();
  if (!m.refrag)
    throw Error("this artifact has no chunk encoder (compile with loomc "
                "--format=refrag)");
  const rt::ProgramDesc &prog = m.programs[m.refrag->project_program];
  // Per dispatch its kernel and parameters (an RMSNorm's eps is part of the
  // fused projector), then the checksum of each weight at its first use.
  std::vector<uint64_t> sums;
  std::vector<bool> seen(m.tensors.size(), false);
  for (const rt::DispatchDesc &d : prog.dispatches) {
    sums.push_back(static_cast<uint64_t>(d.kernel));
    for (int64_t v : d.iparams)
      sums.push_back(static_cast<uint64_t>(v));
    for (float f : d.fparams) {
      uint32_t bits = 0;
      std::memcpy(&bits, &f, sizeof bits);
      sums.push_back(bits);
    }
    for (uint32_t id : d.weight_ids) {
      if (id >= m.tensors.size() || seen[id])
        continue;
      seen[id] = true;
      const rt::TensorDesc &t = m.tensors[id];
      sums.push_back(loomChecksum64(t.raw, t.bytes)); // the stored bytes
    }
  }
  return loomChecksum64(sums.data(), sums.size() * sizeof(uint64_t));
}

void ChunkStore::write(const std::string &path,
                       const std::shared_ptr<const Model> &model,
                       const std::vector<std::vector<int32_t>> &passages,
                       size_t chunk_size,
                       const ChunkStoreWriteOptions &options) {
  if (!model)
    throw Error("ChunkStore::write: no model");
  const RefragInfo &info = refragInfo(*model);
  const size_t k =
      chunk_size ? chunk_size : static_cast<size_t>(info.max_chunk_len);
  if (k > static_cast<size_t>(info.max_chunk_len))
    throw Error("chunk size " + std::to_string(k) + " is out of range (1.." +
                std::to_string(info.max_chunk_len) +
                ", the encoder's max_chunk_len)");
  if (options.threads < 0 || options.threads > 1024)
    throw Error("threads must be between 0 (all) and 1024, got " +
                std::to_string(options.threads));
  const int threads =
      options.threads == 0
          ? tbb::info::default_concurrency()
          : std::min(options.threads, tbb::info::default_concurrency());
  const ModelConfigInfo &cfg = model->config();
  const int64_t E = info.encoder_dim, D = info.projected_dim,
                vocab = cfg.vocab_size;

  // The table, and every passage's ids validated.
  std::vector<ChunkStorePassageEntry> table(passages.size());
  uint64_t n_tokens = 0, n_chunks = 0;
  for (size_t i = 0; i < passages.size(); ++i) {
    const std::vector<int32_t> &p = passages[i];
    if (p.size() > UINT32_MAX)
      throw Error("passage " + std::to_string(i) + " has " +
                  std::to_string(p.size()) + " tokens (at most " +
                  std::to_string(UINT32_MAX) + ")");
    for (int32_t t : p)
      if (t < 0 || t >= vocab)
        throw Error("passage " + std::to_string(i) + ": token id " +
                    std::to_string(t) + " is outside the vocabulary (0.." +
                    std::to_string(vocab - 1) + ")");
    ChunkStorePassageEntry &e = table[i];
    e.token_begin = n_tokens;
    e.chunk_begin = n_chunks;
    e.n_tokens = static_cast<uint32_t>(p.size());
    e.n_chunks = static_cast<uint32_t>((p.size() + k - 1) / k);
    n_tokens += e.n_tokens;
    n_chunks += e.n_chunks;
  }
  Layout layout;
  if (!computeLayout(passages.size(), n_tokens, n_chunks,
                     static_cast<uint64_t>(E), static_cast<uint64_t>(D),
                     layout))
    throw Error("the chunk store would be too large");

  TempOutput out(path);
  out.resize(layout.end);
  {
    std::vector<int32_t> tokens;
    tokens.reserve(n_tokens);
    for (const std::vector<int32_t> &p : passages)
      tokens.insert(tokens.end(), p.begin(), p.end());
    out.writeAt(layout.tokens, tokens.data(), tokens.size() * sizeof(int32_t));
  }

  if (options.progress)
    options.progress(0, n_chunks);
  SessionPool pool(model);
  tbb::task_arena arena(threads);
  // Batches of whole passages, about this many chunks each: small enough
  // for a smooth progress bar and bounded memory, large enough to keep
  // every thread busy between barriers.
  const uint64_t batch_chunks = std::max<uint64_t>(64, 32 * uint64_t(threads));
  struct ChunkRef {
    const int32_t *ids;
    size_t n;
  };
  std::vector<ChunkRef> refs;
  std::vector<float> emb, proj;
  uint64_t done = 0;
  for (size_t p0 = 0; p0 < passages.size();) {
    size_t p1 = p0;
    uint64_t nb = 0;
    while (p1 < passages.size() && (nb == 0 || nb < batch_chunks))
      nb += table[p1++].n_chunks;
    const uint64_t c0 = table[p0].chunk_begin;
    refs.clear();
    for (size_t p = p0; p < p1; ++p)
      for (size_t b = 0; b < passages[p].size(); b += k)
        refs.push_back({passages[p].data() + b,
                        std::min(k, passages[p].size() - b)});
    emb.assign(nb * static_cast<uint64_t>(E), 0.0f);
    proj.assign(nb * static_cast<uint64_t>(D), 0.0f);
    arena.execute([&] {
      // Encode every chunk of the batch...
      tbb::parallel_for(
          tbb::blocked_range<size_t>(0, refs.size(), 4),
          [&](const tbb::blocked_range<size_t> &r) {
            SessionPool::Lease s = pool.acquire();
            for (size_t i = r.begin(); i != r.end(); ++i) {
              std::vector<float> e = s->encodeChunk(refs[i].ids, refs[i].n);
              std::memcpy(emb.data() + i * E, e.data(), E * sizeof(float));
            }
          });
      // ...then project each passage's chunks in one call, as prepareRefrag
      // does for a context, and checksum the passage.
      tbb::parallel_for(
          tbb::blocked_range<size_t>(p0, p1, 1),
          [&](const tbb::blocked_range<size_t> &r) {
            SessionPool::Lease s = pool.acquire();
            for (size_t p = r.begin(); p != r.end(); ++p) {
              ChunkStorePassageEntry &e = table[p];
              const uint64_t row = e.chunk_begin - c0;
              if (e.n_chunks > 0) {
                std::vector<float> rows =
                    s->projectChunks(emb.data() + row * E, e.n_chunks);
                std::memcpy(proj.data() + row * D, rows.data(),
                            rows.size() * sizeof(float));
              }
              e.checksum = passageChecksum(
                  passages[p].data(), passages[p].size(), emb.data() + row * E,
                  proj.data() + row * D, e.n_chunks, E, D);
            }
          });
    });
    out.writeAt(layout.embeddings + c0 * E * sizeof(float), emb.data(),
                emb.size() * sizeof(float));
    out.writeAt(layout.projected + c0 * D * sizeof(float), proj.data(),
                proj.size() * sizeof(float));
    done += nb;
    p0 = p1;
    if (options.progress)
      options.progress(done, n_chunks);
  }

  out.writeAt(layout.table, table.data(),
              table.size() * sizeof(ChunkStorePassageEntry));
  ChunkStoreHeader h;
  std::memset(&h, 0, sizeof h);
  std::memcpy(h.magic, kChunkStoreMagic, sizeof h.magic);
  h.format_version = kChunkStoreVersion;
  h.header_size = sizeof(ChunkStoreHeader);
  h.file_size = layout.end;
  h.encoder_checksum = info.encoder_checksum;
  h.projector_checksum = chunkProjectorChecksum(*model);
  h.chunk_size = static_cast<uint32_t>(k);
  h.encoder_dim = static_cast<uint32_t>(E);
  h.projected_dim = static_cast<uint32_t>(D);
  h.vocab_size = static_cast<uint32_t>(vocab);
  h.cls_token_id = info.cls_token_id;
  h.n_passages = passages.size();
  h.n_chunks = n_chunks;
  h.n_tokens = n_tokens;
  h.table_offset = layout.table;
  h.tokens_offset = layout.tokens;
  h.embeddings_offset = layout.embeddings;
  h.projected_offset = layout.projected;
  h.table_checksum = loomChecksum64(
      table.data(), table.size() * sizeof(ChunkStorePassageEntry));
  h.header_checksum = loomChecksum64(&h, kHeaderChecksummed);
  out.writeAt(0, &h, sizeof h);
  out.commit();
}

// ---- Reading ---------------------------------------------------------------

struct ChunkStore::Impl {
  std::string path;
  const uint8_t *data = nullptr;
  size_t size = 0;
  ChunkStoreHeader header;
  const ChunkStorePassageEntry *table = nullptr;

  ~Impl() {
    if (data)
      ::munmap(const_cast<uint8_t *>(data), size);
  }

  [[noreturn]] void corrupt(const std::string &what) const {
    throw Error("chunk store '" + path + "' is corrupt: " + what);
  }
};

ChunkStore::ChunkStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ChunkStore::ChunkStore(ChunkStore &&) noexcept = default;
ChunkStore &ChunkStore::operator=(ChunkStore &&) noexcept = default;
ChunkStore::~ChunkStore() = default;

ChunkStore ChunkStore::open(const std::string &path) {
  auto impl = std::make_unique<Impl>();
  Impl &s = *impl;
  s.path = path;
  auto cannot = [&](const std::string &why) {
    return Error("cannot open chunk store '" + path + "': " + why);
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw cannot(std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw cannot(std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw cannot("not a regular file");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    throw Error("'" + path + "' is not a Loom chunk store (the file is empty)");
  }
  void *p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int e = errno;
  ::close(fd);
  if (p == MAP_FAILED)
    throw cannot(std::strerror(e));
  s.data = static_cast<const uint8_t *>(p);
  s.size = size;

  // Magic, then the version (a newer store is reported as such), then the
  // rest of the header.
  if (std::memcmp(s.data, kChunkStoreMagic, std::min<size_t>(size, 8)) != 0)
    throw Error("'" + path +
                "' is not a Loom chunk store (no LOOMCHNK magic; write one "
                "with loom-run --encode-chunks)");
  const std::string header_bytes = std::to_string(sizeof(ChunkStoreHeader));
  if (size < 12)
    throw Error("chunk store '" + path + "' is truncated (" +
                std::to_string(size) + " bytes; the header alone is " +
                header_bytes + ")");
  uint32_t version = 0;
  std::memcpy(&version, s.data + 8, sizeof version);
  if (version != kChunkStoreVersion)
    throw Error("chunk store '" + path + "' has format version " +
                std::to_string(version) + "; this runtime reads version " +
                std::to_string(kChunkStoreVersion) +
                " (re-encode it with loom-run --encode-chunks)");
  if (size < sizeof(ChunkStoreHeader))
    throw Error("chunk store '" + path + "' is truncated (" +
                std::to_string(size) + " bytes; the header alone is " +
                header_bytes + ")");
  ChunkStoreHeader &h = s.header;
  std::memcpy(&h, s.data, sizeof h);
  if (loomChecksum64(&h, kHeaderChecksummed) != h.header_checksum)
    s.corrupt("header checksum mismatch");
  if (h.header_size != sizeof(ChunkStoreHeader))
    s.corrupt("header size " + std::to_string(h.header_size) + ", expected " +
              header_bytes);
  if (h.file_size > size)
    throw Error("chunk store '" + path + "' is truncated (" +
                std::to_string(size) + " of " + std::to_string(h.file_size) +
                " bytes)");
  if (h.file_size < size)
    s.corrupt(std::to_string(size) + " bytes, but the header says " +
              std::to_string(h.file_size));
  bool reserved_zero = h.reserved0 == 0;
  for (uint64_t r : h.reserved)
    reserved_zero = reserved_zero && r == 0;
  if (!reserved_zero)
    s.corrupt("reserved header fields are not zero");
  if (h.chunk_size == 0 || h.encoder_dim == 0 || h.projected_dim == 0 ||
      h.vocab_size == 0)
    s.corrupt("zero chunk size, width or vocabulary in the header");
  if (h.cls_token_id < 0 || static_cast<uint32_t>(h.cls_token_id) >= h.vocab_size)
    s.corrupt("CLS id " + std::to_string(h.cls_token_id) +
              " is outside the vocabulary");
  Layout l;
  if (!computeLayout(h.n_passages, h.n_tokens, h.n_chunks, h.encoder_dim,
                     h.projected_dim, l) ||
      l.table != h.table_offset || l.tokens != h.tokens_offset ||
      l.embeddings != h.embeddings_offset ||
      l.projected != h.projected_offset || l.end != h.file_size)
    s.corrupt("the section offsets do not match the layout of " +
              std::to_string(h.n_passages) + " passages, " +
              std::to_string(h.n_tokens) + " tokens and " +
              std::to_string(h.n_chunks) + " chunks");
  // The alignment padding between sections is zero (so every byte of the
  // file is checked by something).
  const uint64_t ends[3] = {
      h.table_offset + h.n_passages * sizeof(ChunkStorePassageEntry),
      h.tokens_offset + h.n_tokens * sizeof(int32_t),
      h.embeddings_offset + h.n_chunks * h.encoder_dim * sizeof(float)};
  const uint64_t next[3] = {h.tokens_offset, h.embeddings_offset,
                            h.projected_offset};
  for (int i = 0; i < 3; ++i)
    for (uint64_t b = ends[i]; b < next[i]; ++b)
      if (s.data[b] != 0)
        s.corrupt("nonzero padding at byte " + std::to_string(b));
  s.table = reinterpret_cast<const ChunkStorePassageEntry *>(s.data +
                                                             h.table_offset);
  if (loomChecksum64(s.table, h.n_passages * sizeof(ChunkStorePassageEntry)) !=
      h.table_checksum)
    s.corrupt("passage table checksum mismatch");
  uint64_t tokens = 0, chunks = 0;
  for (uint64_t i = 0; i < h.n_passages; ++i) {
    const ChunkStorePassageEntry &e = s.table[i];
    if (e.token_begin != tokens || e.chunk_begin != chunks ||
        e.n_chunks != (uint64_t(e.n_tokens) + h.chunk_size - 1) / h.chunk_size)
      s.corrupt("passage " + std::to_string(i) +
                "'s table entry is inconsistent");
    tokens += e.n_tokens;
    chunks += e.n_chunks;
  }
  if (tokens != h.n_tokens || chunks != h.n_chunks)
    s.corrupt("the passage table does not add up to the header's " +
              std::to_string(h.n_tokens) + " tokens and " +
              std::to_string(h.n_chunks) + " chunks");
  return ChunkStore(std::move(impl));
}

void ChunkStore::checkCompatible(const Model &model, size_t chunk_size) const {
  const Impl &s = *impl_;
  const ChunkStoreHeader &h = s.header;
  const RefragInfo &info = refragInfo(model);
  const std::string store = "chunk store '" + s.path + "'";
  if (h.encoder_checksum != info.encoder_checksum)
    throw Error(store + " was made for another encoder (checksum " +
                hex(h.encoder_checksum) + ", this artifact's is " +
                hex(info.encoder_checksum) + ")");
  if (h.encoder_dim != info.encoder_dim || h.cls_token_id != info.cls_token_id)
    throw Error(store + " was made for another encoder (width " +
                std::to_string(h.encoder_dim) + ", CLS id " +
                std::to_string(h.cls_token_id) + "; this artifact's: " +
                std::to_string(info.encoder_dim) + ", " +
                std::to_string(info.cls_token_id) + ")");
  if (h.projected_dim != info.projected_dim)
    throw Error(store + " holds placeholder rows of " +
                std::to_string(h.projected_dim) + " floats, this artifact's " +
                "are " + std::to_string(info.projected_dim) +
                " (model dim " + std::to_string(model.config().dim) +
                (info.projected_dim > model.config().dim
                     ? " + layer 0's q|k|v: loom-fuse-chunk-projector"
                     : "") +
                "); encode the corpus again with this artifact");
  if (h.vocab_size != model.config().vocab_size)
    throw Error(store + " was made for a vocabulary of " +
                std::to_string(h.vocab_size) + " tokens, not " +
                std::to_string(model.config().vocab_size));
  const uint64_t projector = chunkProjectorChecksum(model);
  if (h.projector_checksum != projector)
    throw Error(store + " was made for another projector (checksum " +
                hex(h.projector_checksum) + ", this artifact's is " +
                hex(projector) + ")");
  if (h.chunk_size > static_cast<uint64_t>(info.max_chunk_len))
    throw Error(store + " was made with chunk size " +
                std::to_string(h.chunk_size) +
                ", longer than the encoder's max_chunk_len " +
                std::to_string(info.max_chunk_len));
  if (chunk_size != 0 && chunk_size != h.chunk_size)
    throw Error(store + " was made with chunk size " +
                std::to_string(h.chunk_size) + ", not " +
                std::to_string(chunk_size));
}

ChunkStore::Passage ChunkStore::passage(size_t index) const {
  const Impl &s = *impl_;
  const ChunkStoreHeader &h = s.header;
  if (index >= h.n_passages)
    throw Error("passage " + std::to_string(index) +
                " is out of range (the chunk store has " +
                std::to_string(h.n_passages) + " passages" +
                (h.n_passages ? ", 0.." + std::to_string(h.n_passages - 1)
                              : std::string()) +
                ")");
  const ChunkStorePassageEntry &e = s.table[index];
  Passage p;
  p.tokens = reinterpret_cast<const int32_t *>(s.data + h.tokens_offset) +
             e.token_begin;
  p.n_tokens = e.n_tokens;
  p.n_chunks = e.n_chunks;
  p.embeddings = reinterpret_cast<const float *>(s.data + h.embeddings_offset) +
                 e.chunk_begin * h.encoder_dim;
  p.projected = reinterpret_cast<const float *>(s.data + h.projected_offset) +
                e.chunk_begin * h.projected_dim;
  if (passageChecksum(p.tokens, p.n_tokens, p.embeddings, p.projected,
                      p.n_chunks, h.encoder_dim, h.projected_dim) != e.checksum)
    s.corrupt("passage " + std::to_string(index) +
              "'s data does not match its checksum");
  for (size_t i = 0; i < p.n_tokens; ++i)
    if (p.tokens[i] < 0 || static_cast<uint32_t>(p.tokens[i]) >= h.vocab_size)
      s.corrupt("passage " + std::to_string(index) + " has token id " +
                std::to_string(p.tokens[i]) + ", outside the vocabulary");
  return p;
}

void ChunkStore::verifyData() const {
  for (size_t i = 0; i < impl_->header.n_passages; ++i)
    passage(i);
}

const std::string &ChunkStore::path() const { return impl_->path; }
const ChunkStoreHeader &ChunkStore::header() const { return impl_->header; }
size_t ChunkStore::chunkSize() const { return impl_->header.chunk_size; }
int64_t ChunkStore::encoderDim() const { return impl_->header.encoder_dim; }
int64_t ChunkStore::projectedDim() const { return impl_->header.projected_dim; }
uint64_t ChunkStore::encoderChecksum() const {
  return impl_->header.encoder_checksum;
}
uint64_t ChunkStore::projectorChecksum() const {
  return impl_->header.projector_checksum;
}
size_t ChunkStore::passageCount() const { return impl_->header.n_passages; }
size_t ChunkStore::chunkCount() const { return impl_->header.n_chunks; }
size_t ChunkStore::tokenCount() const { return impl_->header.n_tokens; }
uint64_t ChunkStore::fileSize() const { return impl_->header.file_size; }

// ---- Queries ---------------------------------------------------------------

RefragPrompt prepareRefrag(Session &session, const ChunkStore &store,
                           const ChunkStoreRequest &request) {
  const Model &model = session.model();
  store.checkCompatible(model);
  if (request.passages.empty())
    throw Error("no passages selected (a chunk store query needs at least "
                "one)");
  if (request.expand_fraction && !request.expanded.empty())
    throw Error("give either the expanded chunks or an expand fraction, not "
                "both");
  const size_t k = store.chunkSize();
  const int64_t E = store.encoderDim(), D = store.projectedDim();
  std::vector<ChunkStore::Passage> selected;
  std::vector<bool> seen(store.passageCount(), false);
  size_t n_chunks = 0, n_tokens = 0;
  for (size_t index : request.passages) {
    ChunkStore::Passage p = store.passage(index); // range-checked, verified
    if (seen[index])
      throw Error("passage " + std::to_string(index) + " is selected twice");
    seen[index] = true;
    selected.push_back(p);
    n_chunks += p.n_chunks;
    n_tokens += p.n_tokens;
  }
  if (n_tokens == 0)
    throw Error("the selected passages are empty (REFRAG needs at least one "
                "context token)");

  RefragPrompt p;
  p.chunk_size = k;
  std::vector<int32_t> context;
  context.reserve(n_tokens);
  p.chunk_embeddings.reserve(n_chunks * static_cast<size_t>(E));
  p.projected.reserve(n_chunks * static_cast<size_t>(D));
  for (const ChunkStore::Passage &s : selected) {
    std::vector<int32_t> tokens(s.tokens, s.tokens + s.n_tokens);
    for (std::vector<int32_t> &c : splitChunks(tokens, k))
      p.chunks.push_back(std::move(c));
    context.insert(context.end(), tokens.begin(), tokens.end());
    p.chunk_embeddings.insert(p.chunk_embeddings.end(), s.embeddings,
                              s.embeddings + s.n_chunks * E);
    p.projected.insert(p.projected.end(), s.projected,
                       s.projected + s.n_chunks * D);
  }
  if (request.expand_fraction) {
    p.scores = session.scoreChunks(p.chunk_embeddings.data(), n_chunks);
    p.expanded = expandedByPolicy(p.scores, *request.expand_fraction);
  } else {
    p.expanded = request.expanded;
  }
  p.sequence = assembleChunks(p.chunks, request.question, p.expanded,
                              p.projected.data(), D, model.config().bos_id);
  std::sort(p.expanded.begin(), p.expanded.end());
  return p;
}

} // namespace loom
