// Finds and loads the CUDA backend plugin (libloomrt_cuda.so) next to this
// library; see device.h.
#include "device.h"

#include "loom/error.h"

#include <dlfcn.h>

#include <cstdlib>

#include <mutex>
#include <string>

namespace loom::rt {

#ifdef LOOM_CUDA_BACKEND
namespace {

struct Plugin {
  void *handle = nullptr;
  CudaProbeFn probe = nullptr;
  CudaCreateFn create = nullptr;
  std::string error; // why it did not load
};

// The folder of the library holding this function (libloomrt.so).
std::string ownFolder() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void *>(&ownFolder), &info) == 0 ||
      !info.dli_fname)
    return "";
  std::string path = info.dli_fname;
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash + 1);
}

const Plugin &plugin() {
  static Plugin p;
  static std::once_flag once;
  std::call_once(once, [] {
    // LOOM_CUDA_TIMELINE=FILE: the build whose kernels record their
    // blocks' times (docs/cuda.md, "The GPU timeline").
    const char *timeline = std::getenv("LOOM_CUDA_TIMELINE");
    const std::string name = timeline && *timeline
                                 ? "libloomrt_cuda_timeline.so"
                                 : "libloomrt_cuda.so";
    // Next to libloomrt first (the build tree and an installed lib/), then
    // the loader's search path.
    const std::string beside = ownFolder() + name;
    p.handle = dlopen(beside.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!p.handle)
      p.handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!p.handle) {
      const char *e = dlerror();
      p.error = std::string("cannot load the CUDA backend: ") +
                (e ? e : name + " not found");
      return;
    }
    p.probe = reinterpret_cast<CudaProbeFn>(dlsym(p.handle, "loom_cuda_probe"));
    p.create =
        reinterpret_cast<CudaCreateFn>(dlsym(p.handle, "loom_cuda_create"));
    if (!p.probe || !p.create)
      p.error = "the CUDA backend " + name + " lacks its entry points";
  });
  return p;
}

} // namespace

std::string cudaUnavailableReason() {
  const Plugin &p = plugin();
  if (!p.error.empty())
    return p.error;
  char why[512] = {0};
  if (p.probe(why, sizeof why) == 0)
    return why[0] ? why : "no usable CUDA device";
  return "";
}

std::unique_ptr<DeviceExecutor> createCudaExecutor(const ModelData &model,
                                                   int device,
                                                   TraceRecorder *trace,
                                                   LoopKvSource *loop_kv) {
  const std::string why = cudaUnavailableReason();
  if (!why.empty())
    throw Error("no CUDA device (" + why + ")");
  char err[1024] = {0};
  DeviceExecutor *e =
      plugin().create(&model, device, trace, loop_kv, err, sizeof err);
  if (!e) {
    const std::string message = err[0] ? err : "the CUDA backend failed to start";
    if (message.rfind("out of CUDA memory", 0) == 0)
      throw OutOfMemoryError(message);
    throw Error(message);
  }
  return std::unique_ptr<DeviceExecutor>(e);
}

#else

std::string cudaUnavailableReason() {
  return "this build has no CUDA backend";
}

std::unique_ptr<DeviceExecutor> createCudaExecutor(const ModelData &, int,
                                                   TraceRecorder *,
                                                   LoopKvSource *) {
  throw Error("no CUDA device (" + cudaUnavailableReason() + ")");
}

#endif

} // namespace loom::rt
