// A state dict: tensor names to tensors, in order (what torch.save(model.state_dict()) holds and what expctl's
// models and checkpoints exchange).
#pragma once
#include <torch/torch.h>

#include <string>

namespace expctl::io {

using StateDict = torch::OrderedDict<std::string, torch::Tensor>;

}  // namespace expctl::io
