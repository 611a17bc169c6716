// `expctl sweep FILE --emit slurm`: a Slurm job-array script with one cell per array task. Each task runs
// `srun expctl sweep FILE [--set ...] --cell ID`, so a cell runs exactly as it would locally (same folders, same
// skip-if-finished), and `srun` starts one process per task of the job: with --ntasks-per-node > 1 a cell trains
// data-parallel (ranks from Slurm's variables). Submit with `sbatch`; then `expctl sweep FILE --summary` collects
// the finished cells.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "runner/sweep/sweep.h"

namespace expctl::sweep {

struct SlurmOptions {
  std::filesystem::path expctl;           ///< the expctl binary the tasks run (absolute)
  std::filesystem::path workdir;          ///< the project folder the tasks cd into (absolute)
  std::filesystem::path log_dir;          ///< where slurm-%A_%a.out goes
  std::string job_name;                   ///< --job-name
  std::vector<std::string> sbatch;        ///< extra #SBATCH options, e.g. "--gres=gpu:1", "--time=04:00:00"
};

/// The script text. `file` and `overrides` are passed on to every task as given.
std::string slurm_script(const std::filesystem::path& file, const std::vector<std::string>& overrides,
                         const std::vector<Cell>& cells, const SlurmOptions& options);

/// Quotes one word for bash (single quotes; embedded ones escaped).
std::string shell_quote(const std::string& word);

}  // namespace expctl::sweep
