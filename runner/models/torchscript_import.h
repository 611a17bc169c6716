// Bring your own model: a traced TorchScript CNN, converted into expctl's model graph (runner/models/graph.h) so
// that every stage (fine-tuning, NC, Wanda, the baselines, recovery, reports, export) runs on it.
//
//     # Python, once:
//     model.eval(); torch.jit.trace(model, torch.randn(1, 3, 32, 32)).save("my_net.pt")
//
//     ImportedModel m = import_torchscript("my_net.pt", {3, 32, 32});
//     models::Network net = m.network;   // a GraphNet with the file's parameters and buffers
//
// The file's forward graph is inlined and read op by op: convolutions (plain, grouped, depthwise), batch norm,
// relu / relu6 (hardtanh 0..6) / sigmoid / hardswish / silu / hardsigmoid, max / avg / adaptive pooling, a mean
// over H×W, residual add, channel concatenation, multiply (squeeze-excitation), flatten / view of a classifier
// input, linear, dropout. Layers keep their module paths ("layer1.0.conv1"), so parameters and buffers are copied
// by their qualified names; other nodes are named after the module that ran them ("layer1.0.relu", "layer1.0.add").
// An op outside that set, or one used in a way the graph cannot express (a non-square kernel, ceil_mode, a view
// that is not a flatten), is an expctl::DataError naming the op and the source line TorchScript recorded for it;
// every such op of the file is listed at once. Before anything is returned, the converted network's logits are
// compared with the TorchScript module's own on a random input (float64): a difference above 1e-5 (relative to
// the largest logit) is an error, so nothing half-converted runs.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "runner/models/network.h"

namespace expctl::models {

struct ImportedModel {
  Network network{nullptr};     ///< a GraphNet named after the file ("my_net"), in eval mode, float32, on the CPU
  int64_t in_channels = 0;      ///< the image channels the file's first layers read
  int64_t num_classes = 0;      ///< the logits it gives
  double max_difference = 0.0;  ///< max |converted − TorchScript| / max(1, max |logit|), float64, batch of 2
  double seconds = 0.0;         ///< load + conversion + check
};

/// Reads and converts `file` for inputs of shape `input` = {channels, height, width} (the shapes flatten spans
/// and pooling sizes are computed from). Throws expctl::DataError "<file>: ..." for a file LibTorch cannot load,
/// a forward that does not take one image tensor and return one logit tensor, unsupported ops (each with its
/// source line), parameters missing from the module, or logits that differ from the module's.
ImportedModel import_torchscript(const std::filesystem::path& file, const std::vector<int64_t>& input);

/// The imported network adapted to a data set: `in_channels` image channels (1 from a 3-channel file: the first
/// convs' filters are summed over RGB, as for built-in pretrained models) and, when `new_classes` > 0, a fresh
/// layer producing `new_classes` logits in place of the file's (the last conv or linear layer before the output).
/// Other channel changes throw expctl::DataError naming `source`.
Network adapt_imported(const ImportedModel& m, int64_t in_channels, int64_t new_classes, const std::string& source);

}  // namespace expctl::models
