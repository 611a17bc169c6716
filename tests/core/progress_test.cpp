// The one progress bar (runner/core/progress.h), shared by downloads and training epochs.
#include "runner/core/progress.h"

#include <gtest/gtest.h>
#include <unistd.h>

using expctl::ProgressBar;

TEST(ProgressBar, TheBarFillsInProportionAndClamps) {
  EXPECT_EQ(ProgressBar::bar(0.0, 4), "[....]");
  EXPECT_EQ(ProgressBar::bar(0.5, 4), "[##..]");
  EXPECT_EQ(ProgressBar::bar(0.99, 4), "[###.]");
  EXPECT_EQ(ProgressBar::bar(1.0, 4), "[####]");
  EXPECT_EQ(ProgressBar::bar(7.0, 4), "[####]");
  EXPECT_EQ(ProgressBar::bar(-1.0, 4), "[....]");
  EXPECT_EQ(ProgressBar::bar(0.5).size(), 26u);  // 24 cells and the brackets
}

TEST(ProgressBar, NothingIsDrawnWhenStderrIsNotATerminalOrTheBarIsOff) {
  ProgressBar off(/*enabled=*/false);
  EXPECT_FALSE(off.on_terminal());
  EXPECT_FALSE(off.draw("x", 0.5, "y", /*force=*/true));
  off.finish(true);  // no bar drawn: nothing to end
  ProgressBar bar;
  EXPECT_EQ(bar.on_terminal(), ::isatty(STDERR_FILENO) == 1);
  if (!bar.on_terminal()) EXPECT_FALSE(bar.draw("x", 0.5, "y", /*force=*/true));
}
