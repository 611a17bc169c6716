// OptionBinder: one declaration per parameter gives the table (key, default from the field's initializer, range,
// help) and the reading of a block into the options struct.
#include "runner/core/options_binder.h"

#include <gtest/gtest.h>

namespace {

using expctl::OptionBinder;
using expctl::Params;
using expctl::Value;

struct Base {
  double sparsity = 0.5;
  bool global = false;
};

struct Options : Base {
  enum class Mode { A, B };
  int64_t count = 8;
  bool flag = true;
  std::string name = "x";
  std::vector<std::string> exclude{"conv1", "fc"};
  Mode mode = Mode::B;
};

OptionBinder<Options> make_binder() {
  OptionBinder<Options> b;
  b.add(&Options::sparsity, "sparsity", "fraction").min(0).below(1);  // a field of the base struct
  b.add_enum<bool>(&Options::global, "scope", {{"local", false}, {"global", true}}, "scope");
  b.add(&Options::count, "count", "how many").min(1).max(64);
  b.add(&Options::flag, "flag", "on or off");
  b.add(&Options::name, "name", "a name");
  b.add(&Options::exclude, "exclude", "names");
  b.add_enum(&Options::mode, "mode", {{"a", Options::Mode::A}, {"b", Options::Mode::B}}, "mode");
  return b;
}

template <class T>
Value v(T x) {
  Value out;
  out.v = std::move(x);
  return out;
}

std::string error_of(const OptionBinder<Options>& b, const Params& p) {
  try {
    b.read(p, "who");
  } catch (const expctl::Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(OptionBinder, TheTableTakesItsDefaultsFromTheFieldInitializers) {
  const auto b = make_binder();  // a copy: the binder holds no pointer to itself
  const auto& t = b.table();
  ASSERT_EQ(t.specs().size(), 7u);
  EXPECT_EQ(t.find("sparsity")->default_text(), "0.5");
  EXPECT_EQ(t.find("sparsity")->range_text(), "[0, 1)");
  EXPECT_EQ(t.find("scope")->default_text(), "local");
  EXPECT_EQ(t.find("scope")->range_text(), "local | global");
  EXPECT_EQ(t.find("count")->default_text(), "8");
  EXPECT_EQ(t.find("flag")->default_text(), "true");
  EXPECT_EQ(t.find("name")->default_text(), "x");
  EXPECT_EQ(t.find("exclude")->default_text(), "[conv1, fc]");
  EXPECT_EQ(t.find("mode")->default_text(), "b");
  EXPECT_EQ(t.find("count")->help, "how many");
}

TEST(OptionBinder, ReadingFillsTheFieldsAndKeepsDefaultsForAbsentKeys) {
  const auto b = make_binder();
  const Options defaults = b.read(Params{}, "who");
  EXPECT_EQ(defaults.sparsity, 0.5);
  EXPECT_EQ(defaults.count, 8);
  EXPECT_EQ(defaults.mode, Options::Mode::B);
  Params p;
  p.set("sparsity", v(0.25));
  p.set("scope", v(std::string("global")));
  p.set("count", v(int64_t{3}));
  p.set("flag", v(false));
  p.set("name", v(std::string("y")));
  p.set("exclude", v(std::vector<std::string>{"fc"}));
  p.set("mode", v(std::string("a")));
  const Options o = b.read(p, "who");
  EXPECT_EQ(o.sparsity, 0.25);
  EXPECT_TRUE(o.global);
  EXPECT_EQ(o.count, 3);
  EXPECT_FALSE(o.flag);
  EXPECT_EQ(o.name, "y");
  EXPECT_EQ(o.exclude, std::vector<std::string>{"fc"});
  EXPECT_EQ(o.mode, Options::Mode::A);
}

TEST(OptionBinder, OutOfRangeAndUnknownNamesSpeakTheValidationsWords) {
  const auto b = make_binder();
  Params p;
  p.set("sparsity", v(1.0));
  EXPECT_EQ(error_of(b, p), "who: sparsity: must be in [0, 1), got 1");
  Params c;
  c.set("count", v(int64_t{65}));
  EXPECT_EQ(error_of(b, c), "who: count: must be in [1, 64], got 65");
  Params m;
  m.set("mode", v(std::string("bb")));
  EXPECT_EQ(error_of(b, m), "who: mode: expected one of a, b; got 'bb' (did you mean 'b'?)");
}

// Text of each kind, a list and a choice kept as text, required keys and a plugin selector: the table gets the
// declared type (what validation checks), the struct the text.
struct Texts {
  std::string path = "out", url, name = "TS1", schedule = "cosine", file, pruner;
  std::vector<std::string> input;
};

OptionBinder<Texts> text_binder() {
  OptionBinder<Texts> b;
  b.add_path(&Texts::path, "path", "a folder");
  b.add_url(&Texts::url, "url", "a mirror");
  b.add_name(&Texts::name, "name", "a file-name part");
  b.add_choice(&Texts::schedule, "schedule", {"cosine", "constant"}, "the schedule");
  b.add_required(&Texts::file, "file", expctl::ParamType::Path, "the model file");
  b.add_required(&Texts::input, "input", "the input shape");
  b.add_plugin(&Texts::pruner, "pruner", "pruner", "the pruner");
  return b;
}

TEST(OptionBinder, TextKindsRequiredKeysAndSelectorsGetTheirDeclaredType) {
  using expctl::ParamType;
  const auto b = text_binder();
  const auto& t = b.table();
  EXPECT_EQ(t.find("path")->type, ParamType::Path);
  EXPECT_EQ(t.find("path")->default_text(), "out");
  EXPECT_EQ(t.find("url")->type, ParamType::Url);
  EXPECT_EQ(t.find("name")->type, ParamType::Name);
  EXPECT_EQ(t.find("schedule")->type, ParamType::Enum);
  EXPECT_EQ(t.find("schedule")->range_text(), "cosine | constant");
  EXPECT_EQ(t.find("schedule")->default_text(), "cosine");
  EXPECT_TRUE(t.find("file")->required);
  EXPECT_EQ(t.find("file")->type, ParamType::Path);
  EXPECT_TRUE(t.find("input")->required);
  EXPECT_EQ(t.find("input")->type, ParamType::StringList);
  EXPECT_EQ(t.find("pruner")->type, ParamType::Plugin);
  EXPECT_EQ(t.find("pruner")->plugin_kind, "pruner");

  Params p;
  p.set("schedule", v(std::string("constant")));
  p.set("file", v(std::string("net.pt")));
  p.set("input", v(std::vector<std::string>{"3", "32", "32"}));
  p.set("pruner", v(std::string("wanda")));
  const Texts o = b.read(p, "who");
  EXPECT_EQ(o.schedule, "constant");
  EXPECT_EQ(o.file, "net.pt");
  EXPECT_EQ(o.input, (std::vector<std::string>{"3", "32", "32"}));
  EXPECT_EQ(o.pruner, "wanda");
  EXPECT_EQ(o.path, "out");  // absent: the default
}

TEST(OptionBinder, AFieldNamesItsKeyAndTheValueWrittenForIt) {
  const auto b = make_binder();
  const auto copy = b;  // offsets, not addresses: a copy answers the same
  EXPECT_EQ(copy.key(&Options::count), "count");
  EXPECT_EQ(copy.key(&Options::sparsity), "sparsity");  // a field of the base struct
  EXPECT_EQ(copy.key(&Options::global), "scope");       // an enum spelt by names
  EXPECT_EQ(copy.key(&Options::exclude), "exclude");
  Params p;
  Value written = v(int64_t{4});
  written.mark.line = 7;
  p.set("count", written);
  EXPECT_EQ(copy.value(p, &Options::count).mark.line, 7);
  EXPECT_THROW(copy.value(p, &Options::flag), std::out_of_range);  // bound, but not in this block
  struct Unbound : Options {
    int64_t extra = 0;
  };
  OptionBinder<Unbound> partial;
  partial.add(&Unbound::count, "count", "how many");
  EXPECT_EQ(partial.key(&Unbound::count), "count");
  EXPECT_THROW(partial.key(&Unbound::extra), std::logic_error);
}

}  // namespace
