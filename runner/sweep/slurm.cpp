#include "runner/sweep/slurm.h"

#include <sstream>

namespace expctl::sweep {

std::string shell_quote(const std::string& word) {
  if (!word.empty() && word.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./=:,+-@%") ==
                           std::string::npos)
    return word;
  std::string out = "'";
  for (char c : word) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string slurm_script(const std::filesystem::path& file, const std::vector<std::string>& overrides,
                         const std::vector<Cell>& cells, const SlurmOptions& o) {
  std::ostringstream s;
  s << "#!/bin/bash\n"
    << "# Slurm job array written by `expctl sweep " << file.string() << " --emit slurm`: one sweep cell per task.\n"
    << "# Submit:   sbatch " << "<this file>\n"
    << "# Then:     " << o.expctl.string() << " sweep " << file.string();
  for (const auto& v : overrides) s << " --set " << shell_quote(v);
  s << " --summary   (collects the finished cells)\n"
    << "# The cells start from the shared fine-tuned model: run the fine-tuning scenario before submitting.\n#\n";
  for (const auto& c : cells) s << "#   task " << c.index << ": " << c.settings_text() << "\n";
  s << "#SBATCH --job-name=" << o.job_name << "\n"
    << "#SBATCH --array=0-" << (cells.empty() ? 0 : cells.size() - 1) << "\n"
    << "#SBATCH --output=" << (o.log_dir / "slurm-%A_%a.out").string() << "\n";
  for (const auto& opt : o.sbatch) s << "#SBATCH " << opt << "\n";
  s << "set -euo pipefail\n"
    << "cd " << shell_quote(o.workdir.string()) << "\n"
    << "EXPCTL=${EXPCTL:-" << shell_quote(o.expctl.string()) << "}\n"
    << "ARGS=(sweep " << shell_quote(file.string());
  for (const auto& v : overrides) s << " --set " << shell_quote(v);
  s << ")\n"
    << "case \"${SLURM_ARRAY_TASK_ID:?submit this script with sbatch: it is a job array}\" in\n";
  for (const auto& c : cells) s << "  " << c.index << ") CELL=" << shell_quote(c.id) << " ;;\n";
  s << "  *) echo \"no sweep cell for array task $SLURM_ARRAY_TASK_ID (0-" << (cells.empty() ? 0 : cells.size() - 1)
    << ")\" >&2; exit 2 ;;\nesac\n"
    << "# srun starts the job's tasks: with --ntasks > 1 the cell trains data-parallel, ranks from Slurm.\n"
    << "exec srun \"$EXPCTL\" \"${ARGS[@]}\" --cell \"$CELL\"\n";
  return s.str();
}

}  // namespace expctl::sweep
