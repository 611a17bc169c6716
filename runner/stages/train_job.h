// What the finetune and recover stages share: a TrainJob (runner/training/trainer.h) filled in from the stage's
// context.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "runner/pipeline/pipeline.h"
#include "runner/training/trainer.h"

namespace expctl {

/// A TrainJob filled in from a training stage's context: its block as params, the data set's augmentation, the
/// seed, fingerprint and log, meta {"stage", "scenario"}, interrupt state in {report dir}/{stage}_interrupted.pt,
/// and `fresh` from --force.
TrainJob make_train_job(const StageContext& ctx, const std::string& stage, models::Network model,
                        const data::Split& train, const data::Split& test, torch::Device device,
                        std::function<std::filesystem::path(int64_t epoch)> checkpoint_path);

}  // namespace expctl
