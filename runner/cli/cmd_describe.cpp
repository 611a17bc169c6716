// expctl describe NAME | --all [--markdown]: parameters of a plugin or section, from its one declaration.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <iostream>
#include <sstream>

#include "runner/cli/commands.h"
#include "runner/core/error.h"
#include "runner/core/registry.h"
#include "runner/core/table.h"

namespace expctl::cli {
namespace {

/// The block a plugin's keys join: a pruner's join the prune stage's.
std::string joined_block(const PluginInfo& p) { return p.kind == "pruner" ? "prune" : p.kind; }

std::string text_table(const PluginInfo& p) {
  std::ostringstream out;
  out << p.name << " (" << p.kind << "): " << p.summary << "\n";
  if (!p.code.empty()) out << "checkpoint code: " << p.code << "\n";
  if (!p.details.empty()) out << p.details << "\n";
  if (p.params.empty() && p.overrides.empty()) {
    out << "  (no parameters)\n";
    return out.str();
  }
  std::vector<std::vector<std::string>> rows{{"key", "type", "default", "range", "help"}};
  for (const auto& s : p.params.specs())
    rows.push_back({s.key, s.type_name(), s.default_text(), s.range_text(), s.help});
  std::vector<size_t> w(4, 0);
  for (const auto& r : rows)
    for (size_t i = 0; i < 4; ++i) w[i] = std::max(w[i], r[i].size());
  for (const auto& r : rows) {
    out << "  ";
    for (size_t i = 0; i < 4; ++i) out << r[i] << std::string(w[i] - r[i].size() + 2, ' ');
    out << r[4] << "\n";
  }
  if (!p.overrides.empty()) out << "defaults it gives to keys of the " << joined_block(p) << " block:\n";
  for (const auto& o : p.overrides) out << "  " << o.key << " = " << o.value.to_text() << "  (" << o.note << ")\n";
  return out.str();
}

std::string markdown_table(const PluginInfo& p) {
  std::ostringstream out;
  out << "### `" << p.name << "` (" << p.kind << ")\n\n" << p.summary << ".";
  if (!p.code.empty()) out << " Checkpoint code: `" << p.code << "`.";
  out << "\n\n";
  if (!p.details.empty()) out << p.details << "\n\n";
  if (p.params.empty()) return out.str() + "No parameters.\n\n";
  auto code = [](const char* key) {  // the value as `code`
    return [key](const Table::Json& row) { return "`" + row[key].get<std::string>() + "`"; };
  };
  Table t({{"key", "", "key", code("key"), Align::Left},
           {"type", "", "type", nullptr, Align::Left},
           {"default", "", "default", code("default"), Align::Left},
           {"range", "", "range", nullptr, Align::Left},
           {"help", "", "help", nullptr, Align::Left}});
  for (const auto& s : p.params.specs())
    t.add_row({{"key", s.key},
               {"type", s.type_name()},
               {"default", s.default_text()},
               {"range", s.range_text()},
               {"help", s.help}});
  out << t.markdown();
  if (!p.overrides.empty()) {
    out << "\nDefaults it gives to keys of the `" << joined_block(p) << "` block:\n\n";
    for (const auto& o : p.overrides)
      out << "- `" << o.key << "`: `" << Table::markdown_text(o.value.to_text()) << "` ("
          << Table::markdown_text(o.note) << ")\n";
  }
  return out.str() + "\n";
}

}  // namespace

void add_describe(CLI::App& app, int& exit_code) {
  struct Opts {
    std::string name;
    bool all = false, markdown = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("describe", "Show the parameters of a model, data set, pruner, stage or section");
  cmd->add_option("name", o->name, "e.g. wanda, finetune, ResNet18, CIFAR10, runtime");
  cmd->add_flag("--all", o->all, "every plugin and section");
  cmd->add_flag("--markdown", o->markdown, "Markdown tables (the YAML reference in docs/ is made this way)");
  cmd->callback([o, &exit_code] {
    guarded(exit_code, [&] {
      const Catalog& c = Catalog::instance();
      auto render = [&](const PluginInfo& p) { return o->markdown ? markdown_table(p) : text_table(p); };
      if (o->all) {
        std::vector<std::string> kinds{"section"};
        kinds.insert(kinds.end(), plugin_kinds().begin(), plugin_kinds().end());
        for (const auto& kind : kinds)
          for (const auto& n : c.names(kind)) std::cout << render(*c.find(kind, n)) << (o->markdown ? "" : "\n");
        return;
      }
      if (o->name.empty()) throw ConfigError("describe: give a NAME or --all (see `expctl list`)");
      auto found = c.find_any(o->name);
      if (found.empty()) {
        std::vector<std::string> all;
        for (const auto& kind : {"section", "model", "dataset", "pruner", "stage"})
          for (const auto& n : c.names(kind)) all.push_back(n);
        throw ConfigError(
            unknown_name("describe: nothing is registered as '" + o->name + "'", o->name, all, "known names"));
      }
      for (const auto* p : found) std::cout << render(*p);
    });
  });
}

}  // namespace expctl::cli
