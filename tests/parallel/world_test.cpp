// Which process am I: torchrun's and Slurm's variables, Slurm host lists, bad values; gradient buckets.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <string>

#include "runner/core/error.h"
#include "runner/parallel/process_group.h"

using namespace expctl;

namespace {

// A fake environment for detect_world().
struct Env {
  std::map<std::string, std::string> vars;
  std::function<const char*(const char*)> fn() const {
    return [this](const char* name) -> const char* {
      auto it = vars.find(name);
      return it == vars.end() ? nullptr : it->second.c_str();
    };
  }
  parallel::WorldInfo detect() const { return parallel::detect_world(fn()); }
};

// The message of the Error detect_world() throws ("" when it does not throw).
std::string error_of(const Env& env) {
  try {
    env.detect();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(DetectWorld, NothingSetIsASingleProcess) {
  parallel::WorldInfo w = Env{}.detect();
  EXPECT_EQ(w.rank, 0);
  EXPECT_EQ(w.world_size, 1);
  EXPECT_EQ(w.local_rank, 0);
  EXPECT_EQ(w.source, "single");
  // Slurm variables outside an srun step (an sbatch script, salloc) do not make a world either.
  w = Env{{{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}, {"SLURM_JOB_ID", "7"}}}.detect();
  EXPECT_EQ(w.world_size, 1);
  EXPECT_EQ(w.source, "single");
}

TEST(DetectWorld, Torchrun) {
  Env env{{{"RANK", "3"},
           {"WORLD_SIZE", "8"},
           {"LOCAL_RANK", "1"},
           {"LOCAL_WORLD_SIZE", "2"},
           {"MASTER_ADDR", "node07"},
           {"MASTER_PORT", "29500"}}};
  parallel::WorldInfo w = env.detect();
  EXPECT_EQ(w.source, "torchrun");
  EXPECT_EQ(w.rank, 3);
  EXPECT_EQ(w.world_size, 8);
  EXPECT_EQ(w.local_rank, 1);
  EXPECT_EQ(w.local_world_size, 2);
  EXPECT_EQ(w.master_addr, "node07");
  EXPECT_EQ(w.master_port, 29500);
  // torchrun wins over Slurm when both are present (torchrun started inside an srun step).
  env.vars.insert({{"SLURM_STEP_ID", "0"}, {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}});
  EXPECT_EQ(env.detect().source, "torchrun");
  // One process needs no master.
  EXPECT_EQ((Env{{{"RANK", "0"}, {"WORLD_SIZE", "1"}}}.detect().world_size), 1);
}

TEST(DetectWorld, TorchrunErrorsNameTheVariableAndValue) {
  Env base{{{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"}}};
  auto with = [&](const std::string& k, const std::string& v) {
    Env e = base;
    e.vars[k] = v;
    return error_of(e);
  };
  auto without = [&](const std::string& k) {
    Env e = base;
    e.vars.erase(k);
    return error_of(e);
  };
  EXPECT_EQ(error_of(base), "");
  EXPECT_EQ(with("RANK", "two"), "RANK='two' is not a whole number");
  EXPECT_EQ(with("WORLD_SIZE", "2x"), "WORLD_SIZE='2x' is not a whole number");
  EXPECT_EQ(with("RANK", "2"), "RANK=2 is out of range: WORLD_SIZE is 2 (ranks are 0 to 1)");
  EXPECT_EQ(with("RANK", "-1"), "RANK=-1 is out of range: expected 0 to 1048576");
  EXPECT_EQ(with("WORLD_SIZE", "0"), "WORLD_SIZE=0 is out of range: expected 1 to 1048576");
  EXPECT_EQ(with("MASTER_PORT", "70000"), "MASTER_PORT=70000 is out of range: expected 1 to 65535");
  EXPECT_EQ(with("LOCAL_RANK", "x"), "LOCAL_RANK='x' is not a whole number");
  EXPECT_NE(without("MASTER_ADDR").find("MASTER_ADDR is not set, but WORLD_SIZE is 2"), std::string::npos);
  EXPECT_NE(without("MASTER_PORT").find("MASTER_PORT is not set, but WORLD_SIZE is 2"), std::string::npos);
  EXPECT_NE(without("WORLD_SIZE").find("WORLD_SIZE is not set"), std::string::npos);
}

TEST(DetectWorld, SlurmStep) {
  Env env{{{"SLURM_STEP_ID", "0"},
           {"SLURM_PROCID", "5"},
           {"SLURM_NTASKS", "16"},
           {"SLURM_STEP_NUM_TASKS", "8"},
           {"SLURM_LOCALID", "1"},
           {"SLURM_STEP_TASKS_PER_NODE", "2(x4)"},
           {"SLURM_STEP_NODELIST", "gpu[07-10]"},
           {"SLURM_JOB_NODELIST", "gpu[01-10]"},
           {"SLURM_JOB_ID", "123456"}}};
  parallel::WorldInfo w = env.detect();
  EXPECT_EQ(w.source, "slurm");
  EXPECT_EQ(w.rank, 5);
  EXPECT_EQ(w.world_size, 8) << "the step's task count, not the job's";
  EXPECT_EQ(w.local_rank, 1);
  EXPECT_EQ(w.local_world_size, 2);
  EXPECT_EQ(w.master_addr, "gpu07") << "the first host of the step";
  EXPECT_EQ(w.master_port, 20000 + 123456 % 20000);
  // Without the step's variables: the job's; MASTER_ADDR/MASTER_PORT override the derived ones.
  env.vars.erase("SLURM_STEP_NUM_TASKS");
  env.vars.erase("SLURM_STEP_NODELIST");
  w = env.detect();
  EXPECT_EQ(w.world_size, 16);
  EXPECT_EQ(w.master_addr, "gpu01");
  env.vars["MASTER_ADDR"] = "10.0.0.1";
  env.vars["MASTER_PORT"] = "4242";
  w = env.detect();
  EXPECT_EQ(w.master_addr, "10.0.0.1");
  EXPECT_EQ(w.master_port, 4242);
}

TEST(DetectWorld, SlurmErrorsNameTheVariable) {
  Env env{{{"SLURM_STEP_ID", "0"}, {"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}, {"SLURM_JOB_ID", "9"}}};
  EXPECT_NE(error_of(env).find("neither MASTER_ADDR nor SLURM_STEP_NODELIST/SLURM_JOB_NODELIST is set"),
            std::string::npos)
      << error_of(env);
  env.vars["SLURM_JOB_NODELIST"] = "n[1-2";
  EXPECT_EQ(error_of(env), "SLURM_JOB_NODELIST: Slurm host list 'n[1-2': '[' without ']'");
  env.vars["SLURM_JOB_NODELIST"] = "n[1-2]";
  EXPECT_EQ(error_of(env), "");
  env.vars["SLURM_PROCID"] = "2";
  EXPECT_EQ(error_of(env), "SLURM_PROCID=2 is out of range: SLURM_NTASKS is 2 (ranks are 0 to 1)");
  env.vars["SLURM_PROCID"] = "1";
  env.vars["SLURM_JOB_ID"] = "job9";
  EXPECT_EQ(error_of(env), "SLURM_JOB_ID='job9' is not a whole number");
}

TEST(SlurmHostList, FirstHost) {
  EXPECT_EQ(parallel::first_host("node[01-04,07],gpu3"), "node01");
  EXPECT_EQ(parallel::first_host("gpu3,node[1-2]"), "gpu3");
  EXPECT_EQ(parallel::first_host("single"), "single");
  EXPECT_EQ(parallel::first_host("node[7,1-3]"), "node7");
  EXPECT_EQ(parallel::first_host("rack[2-3]-n[005-010]"), "rack2-n005");
  EXPECT_EQ(parallel::first_host("a-b.example.org"), "a-b.example.org");
  EXPECT_THROW(parallel::first_host(""), Error);
  EXPECT_THROW(parallel::first_host("n]1["), Error);
  EXPECT_THROW(parallel::first_host("n[a-b]"), Error);
  EXPECT_THROW(parallel::first_host("n[]"), Error);
}

TEST(Dist, OneProcessNeedsNoProcessGroup) {
  // Without init() every call works on its own: rank 0 of 1.
  EXPECT_FALSE(parallel::active());
  EXPECT_TRUE(parallel::is_main());
  EXPECT_EQ(parallel::world_size(), 1);
  std::vector<torch::Tensor> t{torch::ones({3})};
  parallel::all_reduce_sum(t);
  parallel::broadcast(t);
  parallel::barrier();
  EXPECT_TRUE(torch::equal(t[0], torch::ones({3})));
  EXPECT_EQ(parallel::all_gather(2.5), std::vector<double>{2.5});
  EXPECT_EQ(parallel::share_from_main("go"), "go");
  // world size 1 always initialises, with or without a backend
  parallel::WorldInfo one;
  parallel::init(one, torch::kCPU);
  EXPECT_FALSE(parallel::active());
  parallel::shutdown();
}

TEST(GradientSync, BucketsBySizeInReverseOrder) {
  // 4 parameters of 10 MB (2.5 M floats): 25 MB buckets hold three, then one; a double parameter gets its own.
  std::vector<torch::Tensor> params;
  for (int i = 0; i < 4; ++i) params.push_back(torch::zeros({2'500'000}).requires_grad_());
  params.push_back(torch::zeros({3}, torch::kDouble).requires_grad_());
  parallel::GradientSync sync(params, 2);
  EXPECT_EQ(sync.num_buckets(), 3u);
  // One process: gradients and extra values stay as they are.
  for (auto& p : params) p.mutable_grad() = torch::ones_like(p);
  auto extra = torch::tensor({1.0f, 2.0f});
  sync.run(extra);
  EXPECT_TRUE(torch::equal(extra, torch::tensor({1.0f, 2.0f})));
  EXPECT_EQ(params[0].grad().sum().item<double>(), 2'500'000.0);
  EXPECT_THROW(sync.run(torch::zeros({5})), Error);
}
