// The one progress bar: redrawn in place on stderr when stderr is a terminal, at most every 100 ms; silent
// otherwise (logs and redirected output get no carriage returns; callers log their own sparse lines there).
//
//     ProgressBar bar;                                       // downloads, training epochs
//     bar.draw("resnet18.pth", 0.42, "18 MB / 44 MB  3 MB/s  ETA 9s");
//     bar.finish(/*keep=*/true);                             // newline (keep) or erase the line
#pragma once
#include <chrono>
#include <string>

namespace expctl {

class ProgressBar {
 public:
  /// `enabled` false: never draws (a data-parallel rank other than 0, a caller asked for quiet).
  explicit ProgressBar(bool enabled = true);
  /// Whether it draws at all: enabled and stderr is a terminal.
  bool on_terminal() const { return tty_; }
  /// Draws "prefix [#####.....]  NN% suffix" (`fraction` clamped to [0, 1]; negative: no bar and no percentage),
  /// unless the last draw was less than 100 ms ago and `force` is false. Returns whether it drew.
  bool draw(const std::string& prefix, double fraction, const std::string& suffix, bool force = false);
  /// Ends a bar that was drawn: a newline after it (`keep`) or the line erased. Nothing when none was drawn.
  void finish(bool keep);

  /// The bar's own part of a line: "[#####.....]" of `width` cells for `fraction` in [0, 1].
  static std::string bar(double fraction, int width = 24);

 private:
  bool tty_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace expctl
