#pragma once
// Whole training steps replayed from CUDA graphs (issue 9): the device work of a step (zero grads, every
// micro-step's forward and backward, the optimizer, the bf16 weight refresh) is captured once and then
// launched as one graph, so the host issues one call per step instead of thousands of kernels.
//
// A step function must be device-only: no host synchronisation, no allocation outside the memory plan,
// and the same buffers every call (the Arena and the staged batch buffers guarantee this). Values that
// change between steps (learning rates, momentum) live in device tensors written before the replay.
// Each distinct `key` (the loop pass count, which changes the layer schedule, and late QAT on/off, which adds
// the fake quantization) gets its own graph; a key's first call runs eagerly (it warms algorithm caches and
// scratch buffers that allocate on first use), the second captures, later calls replay. Without CUDA, or
// when disabled, run() just calls the function.
#include <functional>
#include <map>

namespace pgolf::train {

class StepGraph {
 public:
  // stream: the non-default stream the step runs on (capture is not possible on the legacy stream).
  StepGraph(void* stream, bool enabled);
  ~StepGraph();
  StepGraph(const StepGraph&) = delete;
  StepGraph& operator=(const StepGraph&) = delete;

  void run(int key, const std::function<void()>& device_step);
  bool enabled() const { return enabled_; }
  int replays() const { return replays_; }

 private:
  struct Entry {
    int calls = 0;
    void* graph = nullptr;  // cudaGraph_t
    void* exec = nullptr;   // cudaGraphExec_t
  };
  void* stream_;
  bool enabled_;
  int replays_ = 0;
  std::map<int, Entry> graphs_;
};

}  // namespace pgolf::train
