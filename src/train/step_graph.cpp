#include "train/step_graph.h"

#include "core/error.h"
#if PGOLF_CUDA
#include <cuda_runtime.h>

#include "core/cuda_check.h"
#endif

namespace pgolf::train {

StepGraph::StepGraph(void* stream, bool enabled) : stream_(stream), enabled_(enabled) {
#if !PGOLF_CUDA
  enabled_ = false;
#endif
  PG_CHECK(!enabled_ || stream_ != nullptr, "StepGraph: capture needs a non-default stream");
}

StepGraph::~StepGraph() {
#if PGOLF_CUDA
  for (auto& [key, e] : graphs_) {
    if (e.exec) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(e.exec));
    if (e.graph) cudaGraphDestroy(static_cast<cudaGraph_t>(e.graph));
  }
#endif
}

void StepGraph::run(int key, const std::function<void()>& device_step) {
  if (!enabled_) {
    device_step();
    return;
  }
#if PGOLF_CUDA
  Entry& e = graphs_[key];
  cudaStream_t s = static_cast<cudaStream_t>(stream_);
  if (e.exec == nullptr && e.calls++ == 0) {
    device_step();  // eager: first-use allocations (algorithm caches, scratch) happen here
    return;
  }
  if (e.exec == nullptr) {
    PG_CUDA_CHECK(cudaStreamSynchronize(s), "waiting before capturing the training step");
    cudaGraph_t g = nullptr;
    PG_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "beginning the step capture");
    try {
      device_step();
    } catch (...) {
      cudaStreamEndCapture(s, &g);
      if (g) cudaGraphDestroy(g);
      throw;
    }
    PG_CUDA_CHECK(cudaStreamEndCapture(s, &g),
                  "ending the step capture (an op synchronised or allocated inside the step: set "
                  "train.cuda_graph = false to run eagerly)");
    cudaGraphExec_t x = nullptr;
    PG_CUDA_CHECK(cudaGraphInstantiate(&x, g, 0), "instantiating the step graph");
    e.graph = g;
    e.exec = x;
  }
  PG_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(e.exec), s), "replaying the step graph");
  ++replays_;
#endif
}

}  // namespace pgolf::train
