// Makes multi-GB benchmark artifacts where loomc cannot run (a GPU machine
// without LLVM, reached through a small upload): split a compiled artifact
// into a weightless skeleton here, and fill the skeleton with seeded random
// weights there.
//
//   loom-synth-weights skeleton IN.loom OUT.skel [--weight-type f32|bf16]
//                      [--target NAME]
//   loom-synth-weights fill IN.skel OUT.loom [--seed N] [--threads N]
//
// A skeleton is the artifact's 64-byte header, with the magic "LOOMSKL\0"
// instead of "LOOMART\0" (so no loader mistakes it for an artifact), followed
// by the artifact's flatbuffer: 64 + fb_size bytes. The header's other fields
// still describe the full artifact (file size, where the weights and the
// flatbuffer go, the flatbuffer's checksum).
//
// Without options the skeleton holds IN's flatbuffer byte for byte. With
// --weight-type it is rebuilt (flatbuffers' object API) with every tensor of
// rank >= 2 stored as that type and rank-1 tensors as F32 (loomc
// --weight-type's rule), the tensors laid out again in their order, each at
// the next 64-byte boundary; --target replaces the recorded target ("cpu",
// "cuda"). So a bf16 skeleton can come from an f32 artifact.
//
// `fill` writes the artifact the header describes: the same flatbuffer bytes
// except each tensor's checksum (mutated in place, so every offset, dtype and
// dispatch stays as loomc planned it), every tensor filled with values drawn
// from the seed, padding zero, and a new flatbuffer checksum. It also accepts
// a complete artifact as input (re-seeding it). Values, by the tensor's shape:
//   rank 1, name containing "norm":  1.0
//   rank 1, otherwise (biases):       uniform in [-0.05, 0.05)
//   rank >= 2:                        uniform in [-0.5, 0.5) / sqrt(shape.back())
// stored as the tensor's dtype (F32, or BF16 rounded to nearest even). Each
// value is a hash of (seed, tensor name, element index), so the result does
// not depend on the thread count, and an F32 and a BF16 artifact of the same
// model filled with the same seed hold the same weights up to the rounding.
//
// Every error is one line on stderr and exit code 1.
#include "loom/artifact_format.h"
#include "loom_artifact_generated.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace fb = loom::artifact;
using loom::ArtifactFileHeader;

constexpr char kSkeletonMagic[8] = {'L', 'O', 'O', 'M', 'S', 'K', 'L', '\0'};

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void fail(const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  throw Failure(msg);
}

int usage(FILE *to) {
  std::fprintf(to,
               "usage: loom-synth-weights skeleton IN.loom OUT.skel "
               "[--weight-type f32|bf16] [--target NAME]\n"
               "       loom-synth-weights fill IN.skel|IN.loom OUT.loom "
               "[--seed N] [--threads N]\n"
               "\n"
               "skeleton: the artifact's header and flatbuffer without the "
               "weights (a small file).\n"
               "fill: the complete artifact with seeded random weights "
               "(default seed 1, all cores).\n");
  return to == stdout ? 0 : 1;
}

// A file descriptor closed on scope exit.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0)
      ::close(fd);
  }
  Fd(const Fd &) = delete;
  Fd &operator=(const Fd &) = delete;
};

void readAt(int fd, const std::string &path, void *dst, uint64_t size,
            uint64_t offset) {
  char *p = static_cast<char *>(dst);
  while (size > 0) {
    ssize_t n = ::pread(fd, p, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      fail("cannot read '%s': %s", path.c_str(), std::strerror(errno));
    if (n == 0)
      fail("'%s' is truncated", path.c_str());
    p += n;
    size -= static_cast<uint64_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

void writeAt(int fd, const std::string &path, const void *src, uint64_t size,
             uint64_t offset) {
  const char *p = static_cast<const char *>(src);
  while (size > 0) {
    ssize_t n = ::pwrite(fd, p, std::min<uint64_t>(size, 1ull << 30),
                         static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      fail("cannot write '%s': %s", path.c_str(),
           n < 0 ? std::strerror(errno) : "no progress");
    p += n;
    size -= static_cast<uint64_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

// The input: a header and the flatbuffer it describes, checked as far as
// the artifact's own layout goes (the loader checks the rest).
struct Input {
  ArtifactFileHeader header{};
  bool skeleton = false;
  std::vector<uint8_t> fb; // the flatbuffer bytes
};

Input readInput(const std::string &path, bool allowSkeleton) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.fd < 0)
    fail("cannot open '%s': %s", path.c_str(), std::strerror(errno));
  struct stat st;
  if (::fstat(fd.fd, &st) != 0)
    fail("cannot stat '%s': %s", path.c_str(), std::strerror(errno));
  const uint64_t actual = static_cast<uint64_t>(st.st_size);
  Input in;
  ArtifactFileHeader &h = in.header;
  if (actual < sizeof h)
    fail("'%s' is not a Loom artifact%s: %llu bytes, shorter than the "
         "64-byte header",
         path.c_str(), allowSkeleton ? " or skeleton" : "",
         static_cast<unsigned long long>(actual));
  readAt(fd.fd, path, &h, sizeof h, 0);
  if (std::memcmp(h.magic, loom::kArtifactMagic, 8) == 0) {
    in.skeleton = false;
  } else if (std::memcmp(h.magic, kSkeletonMagic, 8) == 0) {
    if (!allowSkeleton)
      fail("'%s' is a skeleton, not an artifact (fill it: loom-synth-weights "
           "fill %s OUT.loom)",
           path.c_str(), path.c_str());
    in.skeleton = true;
  } else {
    fail("'%s' is not a Loom artifact%s (bad magic)", path.c_str(),
         allowSkeleton ? " or skeleton" : "");
  }
  if (h.format_version != loom::kArtifactFormatVersion)
    fail("'%s' has format version %u, this tool reads version %u",
         path.c_str(), h.format_version, loom::kArtifactFormatVersion);
  if (h.header_size != sizeof h)
    fail("'%s' has a header of %u bytes, expected %zu", path.c_str(),
         h.header_size, sizeof h);
  // The artifact's layout, overflow-safe: header, weights, flatbuffer, all
  // inside file_size, weights aligned, no overlap.
  const uint64_t total = h.file_size;
  if (h.weights_offset < sizeof h ||
      h.weights_offset % loom::kWeightAlignment != 0 ||
      h.weights_offset > total || h.weights_size > total - h.weights_offset ||
      h.fb_offset < sizeof h || h.fb_offset > total ||
      h.fb_size > total - h.fb_offset || h.fb_size < 8 ||
      h.fb_size > (uint64_t(1) << 31) ||
      !(h.fb_offset >= h.weights_offset + h.weights_size ||
        h.fb_offset + h.fb_size <= h.weights_offset))
    fail("'%s' has an inconsistent header (file %llu bytes, weights %llu+%llu, "
         "flatbuffer %llu+%llu)",
         path.c_str(), static_cast<unsigned long long>(total),
         static_cast<unsigned long long>(h.weights_offset),
         static_cast<unsigned long long>(h.weights_size),
         static_cast<unsigned long long>(h.fb_offset),
         static_cast<unsigned long long>(h.fb_size));
  const uint64_t expected = in.skeleton ? sizeof h + h.fb_size : h.file_size;
  if (actual != expected)
    fail("'%s' is %s: %llu bytes, its header says %llu", path.c_str(),
         actual < expected ? "truncated" : "longer than its header says",
         static_cast<unsigned long long>(actual),
         static_cast<unsigned long long>(expected));
  in.fb.resize(h.fb_size);
  readAt(fd.fd, path, in.fb.data(), h.fb_size,
         in.skeleton ? sizeof h : h.fb_offset);
  if (loom::loomChecksum64(in.fb.data(), in.fb.size()) != h.fb_checksum)
    fail("'%s' is corrupt: the flatbuffer checksum does not match",
         path.c_str());
  flatbuffers::Verifier verifier(in.fb.data(), in.fb.size(), 64, 10000000);
  if (!fb::VerifyModelBuffer(verifier))
    fail("'%s' is corrupt: its flatbuffer does not verify", path.c_str());
  return in;
}

void writeWhole(const std::string &path, const std::vector<uint8_t> &bytes) {
  const std::string tmp = path + ".tmp";
  {
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (fd.fd < 0)
      fail("cannot write '%s': %s", tmp.c_str(), std::strerror(errno));
    writeAt(fd.fd, tmp, bytes.data(), bytes.size(), 0);
    if (::close(fd.fd) != 0) {
      fd.fd = -1;
      fail("cannot write '%s': %s", tmp.c_str(), std::strerror(errno));
    }
    fd.fd = -1;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    fail("cannot rename '%s' to '%s': %s", tmp.c_str(), path.c_str(),
         std::strerror(errno));
}

// The flatbuffer again with other stored weight types and/or target; the
// header's sizes follow (weights section, flatbuffer, file).
void rebuild(Input &in, const fb::DType *weightType, const std::string *target) {
  std::unique_ptr<fb::ModelT> m(fb::GetModel(in.fb.data())->UnPack());
  ArtifactFileHeader &h = in.header;
  if (target)
    m->target = *target;
  if (weightType) {
    uint64_t at = 0;
    for (auto &t : m->tensors) {
      uint64_t elems = 1;
      for (int64_t d : t->shape) {
        if (d <= 0 || uint64_t(d) > (uint64_t(1) << 40) / elems)
          fail("tensor '%s' has a bad shape", t->name.c_str());
        elems *= uint64_t(d);
      }
      t->dtype = t->shape.size() >= 2 ? *weightType : fb::DType::F32;
      t->size = elems * (t->dtype == fb::DType::BF16 ? 2 : 4);
      t->offset = at;
      // A placeholder, never 0, so the field is stored for fill to patch.
      t->checksum = 1;
      at = loom::alignUp(at + t->size, loom::kWeightAlignment);
    }
    h.weights_size = at;
  }
  flatbuffers::FlatBufferBuilder fbb(1 << 20);
  fb::FinishModelBuffer(fbb, fb::Model::Pack(fbb, m.get()));
  in.fb.assign(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
  h.weights_offset = sizeof h;
  h.fb_offset = h.weights_offset + h.weights_size;
  h.fb_size = in.fb.size();
  h.fb_checksum = loom::loomChecksum64(in.fb.data(), in.fb.size());
  h.file_size = h.fb_offset + h.fb_size;
}

int skeleton(const std::string &inPath, const std::string &outPath,
             const fb::DType *weightType, const std::string *target) {
  Input in = readInput(inPath, /*allowSkeleton=*/false);
  if (weightType || target)
    rebuild(in, weightType, target);
  ArtifactFileHeader h = in.header;
  std::memcpy(h.magic, kSkeletonMagic, sizeof h.magic);
  std::vector<uint8_t> bytes(sizeof h + in.fb.size());
  std::memcpy(bytes.data(), &h, sizeof h);
  std::memcpy(bytes.data() + sizeof h, in.fb.data(), in.fb.size());
  writeWhole(outPath, bytes);
  const fb::Model *model = fb::GetModel(in.fb.data());
  std::fprintf(stderr,
               "loom-synth-weights: wrote %s (%zu bytes; %u tensors, %.3f GB "
               "of weights to fill)\n",
               outPath.c_str(), bytes.size(), model->tensors()->size(),
               double(h.weights_size) / 1e9);
  return 0;
}

// ---- fill -------------------------------------------------------------

uint64_t mix64(uint64_t z) { // splitmix64's finaliser
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(const char *s, size_t n) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (size_t i = 0; i < n; ++i)
    h = (h ^ static_cast<unsigned char>(s[i])) * 0x100000001B3ull;
  return h;
}

uint16_t toBf16(float f) { // round to nearest even (no NaNs here)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

struct Job {
  uint32_t index;        // in Model.tensors
  const fb::Tensor *t;
  uint64_t key;          // the tensor's stream: seed and name
  bool ones;             // a norm weight
  float scale;           // uniform in [-0.5, 0.5) * scale
  uint64_t elems;
  size_t elemSize;
  uint64_t checksum = 0; // filled by the worker
};

// Element i of a tensor: a counter-based hash, two 24-bit values per word,
// so any range can be generated alone.
template <typename Store>
void generate(const Job &j, Store store) {
  const uint64_t gamma = 0x9E3779B97F4A7C15ull;
  const float unit = 1.0f / 16777216.0f;
  for (uint64_t i = 0; i < j.elems; i += 2) {
    const uint64_t r = mix64(j.key + (i / 2 + 1) * gamma);
    const float a = (float(uint32_t(r >> 40)) * unit - 0.5f) * j.scale;
    store(i, a);
    if (i + 1 < j.elems)
      store(i + 1, (float(uint32_t(r >> 8) & 0xFFFFFFu) * unit - 0.5f) *
                       j.scale);
  }
}

// Writes the tensor at `dst` (its place in the mapped output file).
void fillTensor(Job &j, uint8_t *dst) {
  if (j.elemSize == 4) {
    float *p = reinterpret_cast<float *>(dst);
    if (j.ones)
      std::fill(p, p + j.elems, 1.0f);
    else
      generate(j, [p](uint64_t i, float v) { p[i] = v; });
  } else {
    uint16_t *p = reinterpret_cast<uint16_t *>(dst);
    if (j.ones)
      std::fill(p, p + j.elems, toBf16(1.0f));
    else
      generate(j, [p](uint64_t i, float v) { p[i] = toBf16(v); });
  }
  j.checksum = loom::loomChecksum64(dst, j.elems * j.elemSize);
}

std::vector<Job> planJobs(const fb::Model *model, uint64_t seed,
                          uint64_t weightsSize) {
  std::vector<Job> jobs;
  const auto *tensors = model->tensors();
  for (uint32_t i = 0; i < tensors->size(); ++i) {
    const fb::Tensor *t = tensors->Get(i);
    const char *name = t->name()->c_str();
    size_t elemSize;
    switch (t->dtype()) {
    case fb::DType::F32: elemSize = 4; break;
    case fb::DType::BF16: elemSize = 2; break;
    default:
      fail("tensor '%s' has dtype %d, which this tool cannot fill", name,
           int(t->dtype()));
    }
    const auto *shape = t->shape();
    if (shape->size() == 0)
      fail("tensor '%s' has no shape", name);
    uint64_t elems = 1;
    for (int64_t d : *shape) {
      if (d <= 0 || uint64_t(d) > (uint64_t(1) << 40) / elems)
        fail("tensor '%s' has a bad shape", name);
      elems *= uint64_t(d);
    }
    if (t->size() != elems * elemSize)
      fail("tensor '%s' is %llu bytes but its shape and dtype need %llu", name,
           static_cast<unsigned long long>(t->size()),
           static_cast<unsigned long long>(elems * elemSize));
    if (t->offset() % loom::kWeightAlignment != 0 ||
        t->offset() > weightsSize || t->size() > weightsSize - t->offset())
      fail("tensor '%s' lies outside the weights section", name);
    Job j;
    j.index = i;
    j.t = t;
    j.key = mix64(seed * 0x9E3779B97F4A7C15ull ^
                  fnv1a(name, t->name()->size()));
    const bool vector = shape->size() == 1;
    j.ones = vector && std::strstr(name, "norm") != nullptr;
    j.scale = vector ? 0.1f
                     : 1.0f / std::sqrt(float(shape->Get(shape->size() - 1)));
    j.elems = elems;
    j.elemSize = elemSize;
    jobs.push_back(j);
  }
  return jobs;
}

int fill(const std::string &inPath, const std::string &outPath, uint64_t seed,
         unsigned threads) {
  const auto start = std::chrono::steady_clock::now();
  Input in = readInput(inPath, /*allowSkeleton=*/true);
  const ArtifactFileHeader &h = in.header;
  fb::Model *model = fb::GetMutableModel(in.fb.data());
  std::vector<Job> jobs = planJobs(model, seed, h.weights_size);

  // Largest first, so the last tensors to finish are small ones.
  std::vector<Job *> order;
  for (Job &j : jobs)
    order.push_back(&j);
  std::stable_sort(order.begin(), order.end(), [](const Job *a, const Job *b) {
    return a->t->size() > b->t->size();
  });
  uint64_t totalBytes = 0;
  for (const Job &j : jobs)
    totalBytes += j.t->size();

  const std::string tmp = outPath + ".tmp";
  // The output is written through a shared mapping: every thread fills its
  // tensors in place, with no copy and no lock on the file (buffered writes
  // to one file serialise on its inode). The blocks are reserved first, so a
  // full disk is an error here rather than a SIGBUS later; unwritten space
  // reads as zeros (the padding between tensors).
  Fd fd(::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.fd < 0)
    fail("cannot write '%s': %s", tmp.c_str(), std::strerror(errno));
  auto removeTmp = [&] { ::unlink(tmp.c_str()); };
  int rc = ::posix_fallocate(fd.fd, 0, static_cast<off_t>(h.file_size));
  if (rc == EOPNOTSUPP || rc == EINVAL) // a file system without fallocate
    rc = ::ftruncate(fd.fd, static_cast<off_t>(h.file_size)) == 0 ? 0 : errno;
  if (rc != 0) {
    removeTmp();
    fail("cannot allocate %llu bytes for '%s': %s",
         static_cast<unsigned long long>(h.file_size), tmp.c_str(),
         std::strerror(rc));
  }
  void *mapped = ::mmap(nullptr, h.file_size, PROT_READ | PROT_WRITE,
                        MAP_SHARED, fd.fd, 0);
  if (mapped == MAP_FAILED) {
    int e = errno;
    removeTmp();
    fail("cannot map '%s': %s", tmp.c_str(), std::strerror(e));
  }
  uint8_t *base = static_cast<uint8_t *>(mapped);

  std::atomic<size_t> next{0};
  std::atomic<uint64_t> doneBytes{0};
  std::mutex mu;
  std::condition_variable cv;
  std::string error;
  unsigned running = threads;
  auto worker = [&] {
    try {
      for (size_t k; (k = next.fetch_add(1)) < order.size();) {
        {
          std::lock_guard<std::mutex> lock(mu);
          if (!error.empty())
            break;
        }
        Job &j = *order[k];
        fillTensor(j, base + h.weights_offset + j.t->offset());
        doneBytes += j.t->size();
      }
    } catch (const std::exception &e) {
      std::lock_guard<std::mutex> lock(mu);
      if (error.empty())
        error = e.what();
    }
    std::lock_guard<std::mutex> lock(mu);
    --running;
    cv.notify_all();
  };
  std::vector<std::thread> pool;
  for (unsigned i = 0; i < threads; ++i)
    pool.emplace_back(worker);

  // Progress on stderr: a line rewritten in place on a terminal, a line per
  // tenth otherwise.
  const bool tty = ::isatty(2);
  int lastTenth = 0;
  {
    std::unique_lock<std::mutex> lock(mu);
    while (running > 0) {
      cv.wait_for(lock, std::chrono::milliseconds(250));
      const double frac =
          totalBytes ? double(doneBytes.load()) / double(totalBytes) : 1.0;
      if (tty) {
        std::fprintf(stderr, "\rloom-synth-weights: %.2f / %.2f GB (%3.0f%%)",
                     doneBytes.load() / 1e9, totalBytes / 1e9, 100 * frac);
      } else if (int(frac * 10) > lastTenth && running > 0) {
        lastTenth = int(frac * 10);
        std::fprintf(stderr, "loom-synth-weights: %.2f / %.2f GB (%d%%)\n",
                     doneBytes.load() / 1e9, totalBytes / 1e9, lastTenth * 10);
      }
    }
  }
  for (std::thread &t : pool)
    t.join();
  if (tty)
    std::fprintf(stderr, "\n");
  auto abandon = [&] {
    ::munmap(mapped, h.file_size);
    removeTmp();
  };
  if (!error.empty()) {
    abandon();
    throw Failure(error);
  }

  // The new checksums, patched into the flatbuffer in place. A field that is
  // absent holds the default 0 and can only take 0 (SetField's rule).
  for (const Job &j : jobs) {
    fb::Tensor *t = model->mutable_tensors()->GetMutableObject(j.index);
    if (!t->mutate_checksum(j.checksum)) {
      abandon();
      fail("tensor '%s' has no checksum field to patch (written with "
           "checksum 0)",
           t->name()->c_str());
    }
  }
  // REFRAG: the chunk encoder's identity is the checksum of its tensors'
  // checksums (passes/Serialize/ArtifactWriter.cpp).
  if (fb::RefragConfig *refrag = model->mutable_refrag()) {
    std::vector<uint64_t> sums;
    for (const Job &j : jobs)
      if (std::strncmp(j.t->name()->c_str(), "encoder.", 8) == 0)
        sums.push_back(j.checksum);
    if (!refrag->mutate_encoder_checksum(loom::loomChecksum64(
            sums.data(), sums.size() * sizeof(uint64_t)))) {
      abandon();
      fail("the REFRAG config has no encoder_checksum field to patch");
    }
  }
  ArtifactFileHeader out = h;
  std::memcpy(out.magic, loom::kArtifactMagic, sizeof out.magic);
  out.fb_checksum = loom::loomChecksum64(in.fb.data(), in.fb.size());
  std::memcpy(base + h.fb_offset, in.fb.data(), in.fb.size());
  std::memcpy(base, &out, sizeof out);
  int e = ::munmap(mapped, h.file_size) == 0 ? 0 : errno;
  if (::close(fd.fd) != 0 && e == 0)
    e = errno;
  fd.fd = -1;
  if (e != 0) {
    removeTmp();
    fail("cannot write '%s': %s", tmp.c_str(), std::strerror(e));
  }
  if (std::rename(tmp.c_str(), outPath.c_str()) != 0) {
    e = errno;
    removeTmp();
    fail("cannot rename '%s' to '%s': %s", tmp.c_str(), outPath.c_str(),
         std::strerror(e));
  }
  const double secs = std::chrono::duration<double>(
                          std::chrono::steady_clock::now() - start)
                          .count();
  std::fprintf(stderr,
               "loom-synth-weights: wrote %s (%zu tensors, %.3f GB) in %.2f s "
               "(%.2f GB/s, %u threads, seed %llu)\n",
               outPath.c_str(), jobs.size(), totalBytes / 1e9, secs,
               secs > 0 ? totalBytes / 1e9 / secs : 0.0, threads,
               static_cast<unsigned long long>(seed));
  return 0;
}

uint64_t parseUnsigned(const char *flag, const char *text, uint64_t max) {
  errno = 0;
  char *end = nullptr;
  unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || v > max)
    fail("invalid value '%s' for %s", text, flag);
  return v;
}

int run(int argc, char **argv) {
  if (argc >= 2 && (std::strcmp(argv[1], "--help") == 0 ||
                    std::strcmp(argv[1], "-h") == 0))
    return usage(stdout);
  if (argc < 2)
    fail("missing command (skeleton or fill; --help shows the usage)");
  const std::string cmd = argv[1];
  if (cmd == "skeleton") {
    std::vector<std::string> paths;
    fb::DType weightType = fb::DType::F32;
    std::string target;
    bool haveType = false, haveTarget = false;
    for (int i = 2; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--weight-type" || a == "--target") {
        if (i + 1 >= argc)
          fail("option %s needs a value", a.c_str());
        const std::string v = argv[++i];
        if (a == "--target") {
          if (v.empty())
            fail("--target needs a name (cpu, cuda)");
          target = v;
          haveTarget = true;
        } else if (v == "f32" || v == "bf16") {
          weightType = v == "bf16" ? fb::DType::BF16 : fb::DType::F32;
          haveType = true;
        } else {
          fail("unknown --weight-type '%s' (expected f32 or bf16)", v.c_str());
        }
      } else if (a.size() > 1 && a[0] == '-') {
        fail("unknown option '%s'", a.c_str());
      } else {
        paths.push_back(a);
      }
    }
    if (paths.size() != 2)
      fail("usage: loom-synth-weights skeleton IN.loom OUT.skel "
           "[--weight-type f32|bf16] [--target NAME]");
    return skeleton(paths[0], paths[1], haveType ? &weightType : nullptr,
                    haveTarget ? &target : nullptr);
  }
  if (cmd == "fill") {
    std::vector<std::string> paths;
    uint64_t seed = 1;
    unsigned threads = std::max(1u, std::thread::hardware_concurrency());
    for (int i = 2; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--seed" || a == "--threads") {
        if (i + 1 >= argc)
          fail("option %s needs a value", a.c_str());
        const char *v = argv[++i];
        if (a == "--seed")
          seed = parseUnsigned("--seed", v, UINT64_MAX);
        else
          threads = unsigned(parseUnsigned("--threads", v, 1024));
        if (a == "--threads" && threads == 0)
          fail("--threads must be between 1 and 1024");
      } else if (a.size() > 1 && a[0] == '-') {
        fail("unknown option '%s'", a.c_str());
      } else {
        paths.push_back(a);
      }
    }
    if (paths.size() != 2)
      fail("usage: loom-synth-weights fill IN.skel OUT.loom [--seed N] "
           "[--threads N]");
    return fill(paths[0], paths[1], seed, threads);
  }
  fail("unknown command '%s' (expected skeleton or fill)", cmd.c_str());
}

} // namespace

int main(int argc, char **argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception &e) {
    std::fprintf(stderr, "loom-synth-weights: %s\n", e.what());
    return 1;
  }
}
