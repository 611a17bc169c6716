// Fuzzing the loader: seeded mutations of the shipped scenario files (byte flips, truncations, YAML punctuation,
// duplicated lines, anchors and aliases, bytes that are not UTF-8) and hostile --set values. Loading must either
// succeed or throw ConfigError: no other exception, no crash, bounded time and memory, and no file written.
// A handful of the same go through the expctl binary, which must exit 2 and leave nothing behind.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <chrono>
#include <random>

#include "runner/core/config.h"
#include "runner/core/error.h"
#include "runner/core/yaml_tree.h"
#include "runner/sweep/slurm.h"
#include "runner/sweep/sweep.h"
#include "tests/core/test_util.h"

namespace fs = std::filesystem;
using namespace expctl;

namespace {

const std::vector<std::string> kPunctuation{
    ":", " : ", "-", "- ", "[", "]", "{",  "}",  ",",  "&a ", "*a",    "! ",    "!!str ", "|",  ">",
    "'", "\"",  "#", "%",  "@", "`", "? ", "\n", "\t", "  ",  "---\n", "...\n", "<<: ",   "\\", std::string(1, '\0'),
    "\r"};
const std::vector<std::string> kNotUtf8{"\xFF", "\xC3", "\xED\xA0\x80", "\xC0\xAF", "\xF4\x90\x80\x80", "\xE2\x82"};

// Hostile --set values: shell syntax (which must never reach a shell), YAML syntax, numbers out of range.
const std::vector<std::string> kNastyValues{"'; touch X; echo '",
                                            "$(touch X)",
                                            "`touch X`",
                                            "\"; touch X; echo \"",
                                            "'",
                                            "\"",
                                            "\\",
                                            "''",
                                            "a'b\"c",
                                            "1e999999",
                                            "-1e999999",
                                            "99999999999999999999999999",
                                            "-9223372036854775809",
                                            "NaN",
                                            ".nan",
                                            "inf",
                                            "-.inf",
                                            "0x10",
                                            "1_000",
                                            "+5",
                                            "[[[[[[",
                                            "{a: {b: {c: [1, {d: e}]}}}",
                                            std::string(5000, '[') + std::string(5000, ']'),
                                            "\xFF\xFE",
                                            "caf\xC3",
                                            "",
                                            "~",
                                            "null",
                                            "&a [*a]",
                                            "*a",
                                            "!!binary AAAA",
                                            "!!python/object/apply:os.system [x]",
                                            "|\n  x",
                                            "a: b",
                                            "- x",
                                            "{",
                                            "}",
                                            ",",
                                            "#",
                                            "%YAML 1.2",
                                            "---",
                                            "...",
                                            std::string(100000, 'A'),
                                            "../../etc",
                                            "/dev/zero",
                                            "x\ny: 1",
                                            "[a, *b]",
                                            "{a: 1, a: 2}"};
const std::vector<std::string> kKeys{"finetune.epochs",
                                     "finetune.optimizer.lr",
                                     "paths.checkpoints",
                                     "paths.datasets",
                                     "scenario.method",
                                     "scenario.description",
                                     "scenario.starts_from",
                                     "scenario.test_scenario",
                                     "runtime.device",
                                     "runtime.seed",
                                     "runtime.threads",
                                     "dataset.test_subset",
                                     "dataset.url",
                                     "dataset.md5",
                                     "prune.calibration.samples",
                                     "prune.sparsity",
                                     "prune.pruner",
                                     "model.name",
                                     "stages",
                                     "sweep",
                                     "sweep.prune.sparsity",
                                     "include",
                                     "schema",
                                     "report.latency.repeats",
                                     "a..b",
                                     "finetune.epochs.x",
                                     "x",
                                     std::string(300, 'k') + ".y"};

struct Corpus {
  fs::path root;                             // a copy of configs/test_scenarios
  std::vector<fs::path> files;               // every YAML file in it
  std::map<fs::path, std::string> original;  // their text
  std::vector<fs::path> scenarios;           // the top-level ones (not include/)
};

Corpus make_corpus(const fs::path& dir) {
  Corpus c;
  c.root = dir / "scenarios";
  fs::create_directories(c.root);
  for (const char* ts : {"TS0", "TS1"})
    fs::copy(fs::path(EXPCTL_SOURCE_DIR) / "configs/test_scenarios" / ts, c.root / ts, fs::copy_options::recursive);
  for (const auto& e : fs::recursive_directory_iterator(c.root)) {
    if (e.path().extension() != ".yaml") continue;
    c.files.push_back(e.path());
    c.original[e.path()] = test::read_file(e.path());
    if (e.path().parent_path().filename() != "include") c.scenarios.push_back(e.path());
  }
  std::sort(c.files.begin(), c.files.end());
  std::sort(c.scenarios.begin(), c.scenarios.end());
  return c;
}

template <class T>
const T& pick(std::mt19937& rng, const std::vector<T>& v) {
  return v[std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng)];
}

size_t position(std::mt19937& rng, const std::string& text) {
  return std::uniform_int_distribution<size_t>(0, text.size())(rng);
}

// One seeded mutation of `text`.
std::string mutate(std::mt19937& rng, std::string text) {
  switch (std::uniform_int_distribution<int>(0, 6)(rng)) {
    case 0:  // flip a byte
      if (!text.empty()) text[position(rng, text) % text.size()] = static_cast<char>(rng() & 0xFF);
      return text;
    case 1:  // truncate
      return text.substr(0, position(rng, text));
    case 2:  // YAML punctuation
      return text.insert(position(rng, text), pick(rng, kPunctuation));
    case 3: {  // duplicate a line
      std::vector<std::string> lines;
      std::istringstream in(text);
      for (std::string l; std::getline(in, l);) lines.push_back(l + "\n");
      if (lines.empty()) return text;
      const std::string line = pick(rng, lines);
      lines.insert(lines.begin() + static_cast<long>(position(rng, std::string(lines.size(), ' '))), line);
      std::string out;
      for (const auto& l : lines) out += l;
      return out;
    }
    case 4: {  // an anchor somewhere, aliases of it elsewhere (perhaps inside itself, perhaps many)
      text.insert(position(rng, text), "&a ");
      for (int i = std::uniform_int_distribution<int>(1, 20)(rng); i > 0; --i) text.insert(position(rng, text), "*a");
      return text;
    }
    case 5:  // bytes that are not UTF-8
      return text.insert(position(rng, text), pick(rng, kNotUtf8));
    default:  // an alias bomb appended
      return text +
             "\nz0: &z0 [q, q, q, q, q, q, q, q]\nz1: &z1 [*z0, *z0, *z0, *z0, *z0, *z0, *z0, *z0]\n"
             "z2: &z2 [*z1, *z1, *z1, *z1, *z1, *z1, *z1, *z1]\nz3: [*z2, *z2, *z2, *z2, *z2, *z2, *z2, *z2]\n";
  }
}

// Loads `file` (and, when asked, expands its sweep); "" when it loads or is refused with a ConfigError, else what
// went wrong.
std::string load_outcome(const fs::path& file, const std::vector<std::string>& sets, bool expand) {
  try {
    load_scenario(file, sets);
    if (expand) sweep::expand(file, sets);
  } catch (const ConfigError& e) {
    if (std::string(e.what()).empty()) return "an empty ConfigError";
  } catch (const std::exception& e) {
    return std::string("an exception that is not a ConfigError: ") + e.what();
  } catch (...) {
    return "an exception of unknown type";
  }
  return "";
}

long peak_rss_mib() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024;
}

}  // namespace

TEST(Fuzz, MutatedScenariosAndHostileSetsLoadOrGiveAConfigError) {
  test::TempDir tmp;
  test::Cwd cwd(tmp.path());  // a relative file written by mistake would land here
  Corpus corpus = make_corpus(tmp.path());
  ASSERT_EQ(corpus.scenarios.size(), 7u);  // TS0: finetune, nc, wanda, group_l2; TS1: three
  const size_t entries_before = test::count_entries(tmp.path());
  const long rss_before = peak_rss_mib();
  std::mt19937 rng(20240612);
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  int failures = 0, cases = 0;
  auto check = [&](const std::string& outcome, const std::string& what) {
    ++cases;
    if (!outcome.empty() && ++failures <= 10) ADD_FAILURE() << outcome << " from " << printable(what);
  };

  // Mutated files: the mutated one is loaded through a scenario of its test scenario (so includes and starts_from
  // read it too); every 8th case also expands the sweep.
  for (int i = 0; i < 400 && elapsed() < 10; ++i) {
    const fs::path& target = pick(rng, corpus.files);
    std::string text = corpus.original.at(target);
    for (int m = std::uniform_int_distribution<int>(1, 3)(rng); m > 0; --m) text = mutate(rng, text);
    test::write_file(target, text);
    const fs::path ts =
        target.parent_path().filename() == "include" ? target.parent_path().parent_path() : target.parent_path();
    std::vector<fs::path> same_ts;
    for (const auto& s : corpus.scenarios)
      if (s.parent_path() == ts) same_ts.push_back(s);
    const fs::path& scenario = pick(rng, same_ts);
    check(load_outcome(scenario, {}, i % 8 == 0), "case " + std::to_string(i) + ": " + scenario.string() + " with " +
                                                      target.filename().string() + " mutated to:\n" + text);
    test::write_file(target, corpus.original.at(target));
  }

  // Hostile --set options on the unmutated scenarios.
  for (int i = 0; i < 400 && elapsed() < 15; ++i) {
    std::vector<std::string> sets;
    for (int k = std::uniform_int_distribution<int>(1, 3)(rng); k > 0; --k)
      sets.push_back(pick(rng, kKeys) + "=" + pick(rng, kNastyValues));
    const fs::path& scenario = pick(rng, corpus.scenarios);
    std::string what = "set case " + std::to_string(i) + ": " + scenario.string();
    for (const auto& s : sets) what += " --set " + s.substr(0, 200);
    check(load_outcome(scenario, sets, i % 8 == 0), what);
  }

  EXPECT_EQ(failures, 0) << failures << " of " << cases << " cases failed (the first 10 are shown)";
  EXPECT_GE(cases, 200) << "too few cases in the time allowed";
  EXPECT_LT(elapsed(), 20.0);
  EXPECT_LT(peak_rss_mib() - rss_before, 512) << "the peak memory grew by that many MiB";
  EXPECT_EQ(test::count_entries(tmp.path()), entries_before) << "loading wrote files";
  EXPECT_FALSE(fs::exists(tmp / "X"));
}

TEST(Fuzz, TheBinaryExitsTwoAndLeavesNothingBehind) {
  test::TempDir tmp;
  Corpus corpus = make_corpus(tmp.path());
  const fs::path ts0 = corpus.root / "TS0";
  // A bomb, a truncated flow list, and bytes that are not UTF-8, in files.
  const std::string finetune = corpus.original.at(ts0 / "finetune.yaml");
  test::write_file(
      tmp / "bomb.yaml", finetune + "z0: &z0 [q, q, q, q, q, q, q, q, q, q]\n" + [] {
        std::string t;
        for (int i = 1; i < 9; ++i) {
          t += "z" + std::to_string(i) + ": &z" + std::to_string(i) + " [";
          for (int k = 0; k < 10; ++k) t += (k ? ", *z" : "*z") + std::to_string(i - 1);
          t += "]\n";
        }
        return t;
      }());
  test::write_file(tmp / "cut.yaml", finetune.substr(0, finetune.find("stages: [") + 12));
  test::write_file(tmp / "latin1.yaml", finetune + "scenario: {description: caf\xE9}\n");
  fs::copy(ts0 / "include", tmp / "include", fs::copy_options::recursive);
  const std::string file = sweep::shell_quote((ts0 / "nc.yaml").string());
  const size_t before = test::count_entries(tmp.path());
  // The three files in one run: each is reported, none is ok.
  auto r = test::run_expctl("validate bomb.yaml cut.yaml latin1.yaml", tmp.path());
  EXPECT_EQ(r.exit_code, 2) << printable(r.output);
  for (const char* name : {"bomb.yaml:", "cut.yaml:", "latin1.yaml:"})
    EXPECT_NE(r.output.find(name), std::string::npos) << name << " in " << printable(r.output);
  EXPECT_EQ(r.output.find(": ok ("), std::string::npos) << printable(r.output);
  const std::vector<std::string> commands{
      "validate " + file + " --set " + sweep::shell_quote("finetune.epochs='; touch X; echo '"),
      "validate " + file + " --set " + sweep::shell_quote("scenario.method=$(touch X)"),
      "validate " + file + " --set " + sweep::shell_quote("runtime.device=`touch X`"),
      "validate " + file + " --set " + sweep::shell_quote("paths.checkpoints=\xFF'; touch X; echo '"),
      "validate " + file + " --set " + sweep::shell_quote("sweep.prune.sparsity=[" + std::string(3000, '[')),
      "sweep " + file + " --set " + sweep::shell_quote("prune.sparsity=NaN") + " --list",
  };
  for (const auto& c : commands) {
    SCOPED_TRACE(printable(c.substr(0, 200)));
    r = test::run_expctl(c, tmp.path());
    EXPECT_EQ(r.exit_code, 2) << printable(r.output.substr(0, 2000));
    EXPECT_EQ(r.output.find("terminate called"), std::string::npos);
  }
  EXPECT_FALSE(fs::exists(tmp / "X"));
  EXPECT_EQ(test::count_entries(tmp.path()), before) << "validation wrote files";
}
