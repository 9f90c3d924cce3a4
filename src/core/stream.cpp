#include "core/stream.h"

#include "core/error.h"
#include "core/memory.h"
#if PGOLF_CUDA
#include "core/cuda_check.h"
#endif

namespace pgolf {

namespace {
thread_local void* t_stream = nullptr;
}

void* current_stream() { return t_stream; }
void set_current_stream(void* s) { t_stream = s; }

#if PGOLF_CUDA
Stream::Stream() {
  cudaStream_t s;
  PG_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "creating a stream");
  s_ = s;
}
Stream::~Stream() {
  if (s_) cudaStreamDestroy(static_cast<cudaStream_t>(s_));
}
void Stream::synchronize() const {
  PG_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(s_)), "synchronizing a stream");
}

Event::Event() {
  cudaEvent_t e;
  PG_CUDA_CHECK(cudaEventCreate(&e), "creating an event");
  e_ = e;
}
Event::~Event() {
  if (e_) cudaEventDestroy(static_cast<cudaEvent_t>(e_));
}
void Event::record(void* stream) {
  PG_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(e_), static_cast<cudaStream_t>(stream)),
                "recording an event");
}
void Event::wait(void* stream) const {
  PG_CUDA_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), static_cast<cudaEvent_t>(e_), 0),
                "waiting on an event");
}
void Event::synchronize() const {
  PG_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(e_)), "synchronizing an event");
}
float Event::elapsed_ms(const Event& start) const {
  float ms = 0;
  PG_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start.e_), static_cast<cudaEvent_t>(e_)),
                "timing between events");
  return ms;
}
void device_synchronize() {
  // A CUDA build on a machine without a GPU (CI) runs everything on the CPU: nothing to wait for.
  static const bool have_gpu = cuda_available();
  if (!have_gpu) return;
  PG_CUDA_CHECK(cudaDeviceSynchronize(), "synchronizing the device");
}
#else
Stream::Stream() = default;
Stream::~Stream() = default;
void Stream::synchronize() const {}
Event::Event() = default;
Event::~Event() = default;
void Event::record(void*) {}
void Event::wait(void*) const {}
void Event::synchronize() const {}
float Event::elapsed_ms(const Event&) const { return 0.f; }
void device_synchronize() {}
#endif

}  // namespace pgolf
