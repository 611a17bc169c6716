// The stop flag: SIGINT or SIGTERM sets it while a StopSignals is alive (the pipeline holds one over a run), and
// request_stop() sets it from code (a data-parallel rank that another rank's signal reached). Long work, the
// training epochs above all, polls stop_requested(), saves and returns.
#pragma once
#include <csignal>

namespace expctl {

/// Whether a stop was requested since the current StopSignals began.
bool stop_requested();
/// Sets the stop flag as a signal would.
void request_stop();

/// For its lifetime: clears the stop flag, then catches SIGINT and SIGTERM into it; restores the previous handlers.
class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  struct sigaction old_int_ {
  }, old_term_{};
};

}  // namespace expctl
