// Lineage checks the stages declare as their `preflight` (see StageEntry): no run replaces checkpoints that another
// scenario wrote, and no pruning scenario starts from a checkpoint made otherwise than its scenario.starts_from
// says. Both read what a checkpoint records of its maker (see lineage() in runner/pipeline/pipeline.h).
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "runner/pipeline/pipeline.h"

namespace expctl {

/// One refusal per family of shared checkpoint names in `plan` (writes marked `shared`) of which a file exists that
/// another scenario wrote (another scenario name, or the same name from another scenario file); none with --force.
/// Names both scenarios and the ways out: another scenario.test_scenario, paths.checkpoints, or --force.
std::vector<std::string> foreign_checkpoints(const ScenarioConfig& cfg, const Naming& naming,
                                             const std::vector<PlannedFile>& plan, bool force);

/// Why `checkpoint` cannot stand for what stage `stage` of `maker` (the scenario.starts_from of `cfg`) makes now:
/// it records another fingerprint (other settings, or another scenario). "" when it fits or is missing (the stage
/// that reads it says which command makes it).
std::string made_otherwise(const ScenarioConfig& cfg, const ScenarioConfig& maker, const std::string& stage,
                           const std::filesystem::path& checkpoint);

}  // namespace expctl
