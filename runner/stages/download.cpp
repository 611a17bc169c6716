// download stage: fetches the model's pretrained weights and the data set into downloaded_models/ and
// downloaded_datasets/ (resuming, retrying, verifying checksums before use) and unpacks archives.
#include "runner/io/download.h"

#include <spdlog/spdlog.h>

#include "runner/core/error.h"
#include "runner/core/lock.h"
#include "runner/core/options_binder.h"
#include "runner/data/registry.h"
#include "runner/io/archive.h"
#include "runner/io/checksum.h"
#include "runner/models/models.h"
#include "runner/pipeline/pipeline.h"

namespace expctl {
namespace {

struct DownloadStageOptions {
  int64_t retries = 5;
  int64_t connect_timeout_s = 30;
  int64_t stall_timeout_s = 60;
  bool progress = true;
};

const OptionBinder<DownloadStageOptions>& binder() {
  static const OptionBinder<DownloadStageOptions> b = [] {
    using O = DownloadStageOptions;
    OptionBinder<O> b;
    b.add(&O::retries, "retries", "attempts per file before giving up").min(1).max(100);
    b.add(&O::connect_timeout_s, "connect_timeout_s", "seconds to wait for a connection").min(1).max(3600);
    b.add(&O::stall_timeout_s, "stall_timeout_s", "abort an attempt when under 1 KiB/s for this many seconds")
        .min(1)
        .max(3600);
    b.add(&O::progress, "progress", "a progress bar on a terminal, periodic log lines otherwise");
    return b;
  }();
  return b;
}

std::vector<io::RemoteFile> files_of(const ScenarioConfig& cfg, const Naming& n) {
  auto files = models::ModelRegistry::find(cfg.model_name())->files(cfg.model, n.models_dir());
  auto data = data::dataset_entry(cfg).files(cfg.dataset, n.datasets_dir());
  files.insert(files.end(), data.begin(), data.end());
  return files;
}

std::vector<PlannedFile> plan(const ScenarioConfig& cfg, const Naming& n, const Params&) {
  std::vector<PlannedFile> out;
  for (const auto& f : files_of(cfg, n)) {
    out.push_back({PlannedFile::Access::Read, f.url, f.what + " (URL)"});
    out.push_back({PlannedFile::Access::Write, f.destination, f.what});
    if (!f.extract_to.empty()) out.push_back({PlannedFile::Access::Write, f.extract_to, "unpacked " + f.what});
  }
  return out;
}

// Unpacks an archive bound to its content (a changed archive is unpacked again; with --force, also a folder
// whose files changed) and checked by its data set's reader. An archive that passed its checksum but holds the
// wrong content or an unsafe entry is deleted with its .verified record: keeping it would make every rerun fail
// the same way even after the URL is fixed.
bool extract(const io::RemoteFile& f, const io::DownloadResult& r, bool force) {
  try {
    return io::extract_archive(r.path, f.extract_to, {r.sha256, f.check_content, force});
  } catch (const DataError& e) {
    std::error_code ec;
    std::filesystem::remove(r.path, ec);
    io::forget_verified(r.path);
    throw DataError(std::string(e.what()) + "\n  " + r.path.string() + " (from " + f.url + ", " +
                    (f.md5.empty() && f.sha256_prefix.empty() ? "no checksum given" : "checksum matched") +
                    ") is not the " + f.what + " and was deleted; point " + f.config_key +
                    " and its checksum at the right file and run the same command again");
  }
}

class DownloadStage : public Stage {
 public:
  void run(StageContext& ctx) override {
    // Sweep cells and Slurm array tasks share the download folders: one process fetches, the others wait and
    // then find the files present and verified.
    const std::filesystem::path lock_file = ctx.naming.download_lock();
    WaitLock lock(lock_file,
                  [&] { ctx.log->info("waiting for another expctl that downloads ({})", lock_file.string()); });
    for (const auto& f : files_of(ctx.config, ctx.naming)) {
      io::DownloadOptions o;
      o.url = f.url;
      o.destination = f.destination;
      o.sha256_prefix = f.sha256_prefix;
      o.md5 = f.md5;
      const DownloadStageOptions k = binder().read(ctx.params, "download");
      o.max_attempts = static_cast<int>(k.retries);
      o.connect_timeout_s = k.connect_timeout_s;
      o.stall_timeout_s = k.stall_timeout_s;
      o.progress = k.progress;
      io::DownloadResult r;
      try {
        r = io::download(o);
      } catch (const Error& e) {
        // Offline machines and mirrors are common on research clusters: say how to point expctl elsewhere.
        const bool folder = f.config_key == "dataset.url" && f.extract_to.empty();  // a folder of files
        throw Error(std::string(e.what()) + "\n  a mirror or a local copy works too: --set " + f.config_key +
                    "=file:///path/to/" + (folder ? std::string("folder/") : io::url_basename(f.url)));
      }
      ctx.log->info("{}: {} ({} bytes)", r.path.string(),
                    r.fetched ? "downloaded and verified" : "present and verified", r.bytes);
      ctx.outputs.push_back(r.path);
      if (!f.extract_to.empty()) {
        ctx.log->info("{}: {}", f.extract_to.string(),
                      extract(f, r, ctx.options.force) ? "unpacked" : "already unpacked");
        ctx.outputs.push_back(f.extract_to);
      }
      if (stop_requested()) return;
    }
  }
};

StageEntry entry() {
  StageEntry e;
  e.info.name = "download";
  e.info.summary = "fetch pretrained weights and the data set (resumable, verified)";
  e.info.params = binder().table();
  e.plan = plan;
  e.create = [] { return std::make_unique<DownloadStage>(); };
  return e;
}

}  // namespace

EXPCTL_REGISTER(StageRegistry, entry());

}  // namespace expctl
