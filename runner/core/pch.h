// Precompiled header shared by every module: LibTorch's headers are large and take ~20 s per file otherwise.
#pragma once
#include <torch/torch.h>
