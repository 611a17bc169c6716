#include "runner/core/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace expctl {

ProgressBar::ProgressBar(bool enabled) : tty_(enabled && ::isatty(STDERR_FILENO) == 1) {}

std::string ProgressBar::bar(double fraction, int width) {
  const int filled = static_cast<int>(std::clamp(fraction, 0.0, 1.0) * width);
  return "[" + std::string(size_t(filled), '#') + std::string(size_t(width - filled), '.') + "]";
}

bool ProgressBar::draw(const std::string& prefix, double fraction, const std::string& suffix, bool force) {
  if (!tty_) return false;
  const auto now = std::chrono::steady_clock::now();
  if (!force && drawn_ && now - last_ < std::chrono::milliseconds(100)) return false;
  last_ = now;
  drawn_ = true;
  std::string line = "\r" + prefix + " ";
  if (fraction >= 0) {
    char pct[8];
    std::snprintf(pct, sizeof pct, "%3d%%", static_cast<int>(std::clamp(fraction, 0.0, 1.0) * 100.0));
    line += bar(fraction) + " " + pct + " ";
  }
  line += suffix + "\033[K";  // clear what a longer previous line left behind
  std::fputs(line.c_str(), stderr);
  std::fflush(stderr);
  return true;
}

void ProgressBar::finish(bool keep) {
  if (!tty_ || !drawn_) return;
  std::fputs(keep ? "\n" : "\r\033[K", stderr);
  std::fflush(stderr);
  drawn_ = false;
}

}  // namespace expctl
