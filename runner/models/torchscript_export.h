// A model as a TorchScript file that needs no expctl: Python's `torch.jit.load(path)(images)` gives expctl's
// logits, and `.state_dict()` has the model's (torchvision's) parameter names.
//
//     models::export_torchscript(*model, model->graph(), "model.torchscript.pt");
//
//     # Python
//     net = torch.jit.load("model.torchscript.pt")
//     logits = net(images)        # float [N, C, H, W], normalised as the scenario's data set
//
// The file holds the weights under the module's own names (nested modules "layer1" → "0" → "conv1") and a
// forward method generated from the graph (runner/models/graph.h) with torch's functional ops. It is an inference
// model: batch norms use their running statistics and dropout is off, whatever mode the module was in.
#pragma once
#include <torch/script.h>
#include <torch/torch.h>

#include <filesystem>
#include <string>

#include "runner/models/graph.h"

namespace expctl::models {

/// The TorchScript source of `graph`'s forward method, reading tensors as attributes of `self` by their
/// state-dict names. Throws expctl::Error naming the node for an op or kind it cannot express.
std::string torchscript_source(const Graph& graph);

/// `module`'s parameters and buffers (copied to the CPU) with the forward of `graph` (which must describe `module`),
/// as a TorchScript module in eval mode. Throws expctl::Error when the graph names a tensor the module lacks.
torch::jit::Module to_torchscript(const torch::nn::Module& module, const Graph& graph);

/// Writes to_torchscript(module, graph) as a TorchScript file at `path`, through a temporary file and a rename
/// (no half-written file on failure).
void export_torchscript(const torch::nn::Module& module, const Graph& graph, const std::filesystem::path& path);

}  // namespace expctl::models
