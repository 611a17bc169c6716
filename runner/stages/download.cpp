// download stage: fetches the model's pretrained weights and the data set into downloaded_models/ and
// downloaded_datasets/, verifying checksums before use.
#include "runner/core/pipeline.h"

namespace expctl {
namespace {

std::string basename_of_url(const std::string& url) {
  auto q = url.find_first_of("?#");
  std::string u = url.substr(0, q);
  return u.substr(u.find_last_of('/') + 1);
}

std::vector<PlannedFile> plan(const ScenarioConfig& cfg, const Naming& n, const Params&) {
  std::vector<PlannedFile> out;
  if (cfg.model.has("pretrained") && cfg.model.get_bool("pretrained")) {
    const std::string& url = cfg.model.get_string("weights_url");
    out.push_back({PlannedFile::Access::Read, url, "pretrained weights (URL)"});
    out.push_back({PlannedFile::Access::Write, n.models_dir() / basename_of_url(url), "pretrained weights"});
  }
  const std::string& url = cfg.dataset.get_string("url");
  out.push_back({PlannedFile::Access::Read, url, "data set (URL)"});
  out.push_back({PlannedFile::Access::Write, n.datasets_dir() / cfg.dataset_name(), "data set files"});
  return out;
}

StageEntry entry() {
  StageEntry e;
  e.info.name = "download";
  e.info.summary = "fetch pretrained weights and the data set (resumable, verified)";
  ParamTable& t = e.info.params;
  t.add_int("retries", 5, "attempts per file before giving up").min(1).max(100);
  t.add_int("connect_timeout_s", 30, "seconds to wait for a connection").min(1).max(3600);
  t.add_int("stall_timeout_s", 60, "abort an attempt when under 1 KiB/s for this many seconds").min(1).max(3600);
  t.add_enum("progress", "auto", {"auto", "bar", "log"}, "auto: a bar on a terminal, log lines otherwise");
  e.info.unavailable = "downloads land with issue #3 (downloads, data sets, ResNet-18, checkpoints)";
  e.plan = plan;
  return e;
}

}  // namespace

EXPCTL_REGISTER_STAGE(entry());

}  // namespace expctl
