#pragma once
// Streams and events. Ops launch on the thread's current stream (default: the legacy null stream);
// StreamGuard switches it for a scope. Handles are opaque here so CPU-only code needs no CUDA headers.
#include <cstdint>

namespace pgolf {

void* current_stream();  // cudaStream_t, or nullptr (CPU builds and the default stream)
void set_current_stream(void* s);

class Stream {
 public:
  Stream();  // a new non-blocking stream (a no-op handle without CUDA)
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  void* handle() const { return s_; }
  void synchronize() const;

 private:
  void* s_ = nullptr;
};

class Event {
 public:
  Event();
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record(void* stream = current_stream());
  void wait(void* stream = current_stream()) const;  // make `stream` wait for this event
  void synchronize() const;
  float elapsed_ms(const Event& start) const;  // this - start, both recorded

 private:
  void* e_ = nullptr;
};

class StreamGuard {
 public:
  explicit StreamGuard(void* s) : prev_(current_stream()) { set_current_stream(s); }
  ~StreamGuard() { set_current_stream(prev_); }

 private:
  void* prev_;
};

void device_synchronize();  // waits for all GPU work; no-op without CUDA

}  // namespace pgolf
