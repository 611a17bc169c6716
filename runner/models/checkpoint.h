// Checkpoints: one zip-format torch file per model that Python's torch.load opens as a plain dict
//   {"format": "expctl.checkpoint", "version": 1,
//    "arch": {"family": "graph", "name": "resnet18", "graph": [{"op": "conv", "name": "conv1", ...}, ...]},
//    "state_dict": {name: tensor}, "masks": {name: bool tensor}, "meta": {free-form entries}}
// and from which the exact (possibly pruned) model is rebuilt. Files of earlier versions may hold a ResNet-18/34 as
//    "arch": {"family": "resnet", "name", "depth", "num_classes", "stem", "in_channels", "stage_widths",
//             "block_widths"}
// which read_checkpoint() converts to its graph (the state dict's keys are the same). Training state for resuming
// (optimizer, epoch, RNG) lives beside it in "<stem>.train.pt" (a LibTorch archive, C++ only).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runner/models/graph.h"
#include "runner/models/network.h"

namespace expctl::models {

/// The contents of a checkpoint file.
struct Checkpoint {
  std::string family = "graph";                    ///< as in the file: "graph", or "resnet" (earlier versions)
  std::string name;                                ///< "resnet18", "vgg16_bn", ...
  Graph graph;                                     ///< the network's graph, pruned widths included
  StateDict state_dict;                            ///< every parameter and buffer, torchvision names
  StateDict masks;                                 ///< optional: parameter name → bool mask (unstructured pruning)
  nlohmann::json meta = nlohmann::json::object();  ///< free-form: epoch, accuracy, config_hash, ...
};

/// Writes `model` (its architecture and state dict), `meta` (a JSON object of strings, numbers, bools, nulls, arrays and
/// objects) and `masks` (names of the model's parameters → bool/uint8 tensors of the same shape) to `file`,
/// atomically: a temporary file in the same folder, then rename. Creates missing parent folders.
/// Throws expctl::Error "<file>: ..." (saying the previous file is intact) when anything fails.
void save_checkpoint(const std::filesystem::path& file, const Network& model,
                     const nlohmann::json& meta = nlohmann::json::object(), const StateDict& masks = StateDict());

/// Reads a checkpoint written by save_checkpoint(). Throws expctl::DataError "<file>: ..." for a missing,
/// truncated, foreign (e.g. a plain state dict) or inconsistent file.
Checkpoint read_checkpoint(const std::filesystem::path& file);

/// Builds the model `ckpt` describes and loads its weights (strict); `source` names it in errors.
Network build_model(const Checkpoint& ckpt, const std::string& source = "checkpoint");

/// read_checkpoint() + build_model(); the file's contents go to `*contents` when it is not null.
Network load_checkpoint(const std::filesystem::path& file, Checkpoint* contents = nullptr);

/// The training-state file beside a checkpoint: "X.pt" → "X.train.pt".
std::filesystem::path training_state_path(const std::filesystem::path& checkpoint);

/// What load_training_state() returns besides restoring the optimizer and RNGs.
struct TrainingState {
  int64_t epoch = 0;                                ///< the epoch the state was saved after
  nlohmann::json extra = nlohmann::json::object();  ///< whatever the caller saved
};

/// Saves the optimizer's state (momentum buffers, ...), `epoch`, `extra` and the CPU (and CUDA, when present)
/// RNG states to training_state_path(checkpoint), atomically.
void save_training_state(const std::filesystem::path& checkpoint, torch::optim::Optimizer& optimizer, int64_t epoch,
                         const nlohmann::json& extra = nlohmann::json::object());

/// The epoch and `extra` of a training-state file, restoring nothing: to check what the state belongs to before
/// resuming from it. Throws expctl::DataError "<file>: ..." when the file is missing or corrupt.
TrainingState peek_training_state(const std::filesystem::path& checkpoint);

/// Restores what save_training_state() saved into `optimizer` (built over the same parameters, in the same
/// order) and the RNGs. Throws expctl::DataError "<file>: ..." when the file is missing, corrupt, or does not fit.
TrainingState load_training_state(const std::filesystem::path& checkpoint, torch::optim::Optimizer& optimizer);

}  // namespace expctl::models
