#include "runner/core/registry.h"

#include <cstdio>
#include <cstdlib>

namespace expctl {

Catalog& Catalog::instance() {
  static Catalog catalog;  // function-local: safe to use from other files' static initialisers
  return catalog;
}

bool Catalog::add(PluginInfo info) {
  auto& kind = by_kind_[info.kind];
  if (kind.count(info.name)) {
    std::fprintf(stderr, "expctl: %s '%s' registered twice\n", info.kind.c_str(), info.name.c_str());
    std::abort();
  }
  std::string name = info.name;
  kind.emplace(std::move(name), std::move(info));
  return true;
}

const PluginInfo* Catalog::find(const std::string& kind, const std::string& name) const {
  auto k = by_kind_.find(kind);
  if (k == by_kind_.end()) return nullptr;
  auto it = k->second.find(name);
  return it == k->second.end() ? nullptr : &it->second;
}

std::vector<std::string> Catalog::names(const std::string& kind) const {
  std::vector<std::string> out;
  auto k = by_kind_.find(kind);
  if (k != by_kind_.end())
    for (const auto& kv : k->second) out.push_back(kv.first);
  return out;
}

std::vector<const PluginInfo*> Catalog::find_any(const std::string& name) const {
  std::vector<const PluginInfo*> out;
  for (const auto& [kind, names] : by_kind_) {
    auto it = names.find(name);
    if (it != names.end()) out.push_back(&it->second);
  }
  return out;
}

}  // namespace expctl
