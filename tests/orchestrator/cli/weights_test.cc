// llmorch weights, through the CLI's entry point: JSON and table output, and every usage error.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "run_cli.h"

namespace llmorch::cli {
namespace {

using Result = CliResult;

Result weights(std::vector<std::string> args) {
  args.insert(args.begin(), "weights");
  return run_cli(args);
}

TEST(WeightsCli, JsonWorkedExample) {
  const Result r = weights({"--json", "--cpus", "4", "A=2", "B=1"});
  ASSERT_EQ(r.status, kExitOk) << r.err;
  const nlohmann::json doc = nlohmann::json::parse(r.out);  // throws unless exactly one JSON value
  EXPECT_DOUBLE_EQ(doc.at("alpha").get<double>(), 0.8);
  EXPECT_NEAR(doc.at("weights").at("A").get<double>(), 0.3571, 5e-5);
  EXPECT_NEAR(doc.at("weights").at("B").get<double>(), 0.6429, 5e-5);
  EXPECT_EQ(doc.at("vcpus").at("A").get<int>(), 1);
  EXPECT_EQ(doc.at("vcpus").at("B").get<int>(), 3);
  EXPECT_EQ(doc.size(), 3u);
  EXPECT_TRUE(r.err.empty());
}

TEST(WeightsCli, JsonWithoutCpusHasNoVcpus) {
  const Result r = weights({"--json", "--alpha", "0", "x=1", "y=5", "z=9"});
  ASSERT_EQ(r.status, kExitOk) << r.err;
  const nlohmann::json doc = nlohmann::json::parse(r.out);
  EXPECT_FALSE(doc.contains("vcpus"));
  EXPECT_DOUBLE_EQ(doc.at("alpha").get<double>(), 0.0);
  for (const char* name : {"x", "y", "z"}) EXPECT_NEAR(doc["weights"][name].get<double>(), 1.0 / 3, 1e-12);
}

TEST(WeightsCli, FewerCpusThanVmsLetsSomeHaveNone) {
  const Result r = weights({"--json", "--cpus", "2", "a=1", "b=2", "c=3"});
  ASSERT_EQ(r.status, kExitOk) << r.err;
  const nlohmann::json doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["vcpus"]["a"].get<int>(), 1);
  EXPECT_EQ(doc["vcpus"]["b"].get<int>(), 1);
  EXPECT_EQ(doc["vcpus"]["c"].get<int>(), 0);
}

TEST(WeightsCli, EnoughCpusGivesEveryVmAtLeastOne) {
  const Result r = weights({"--json", "--alpha", "1", "--cpus", "3", "a=1", "b=100", "c=100"});
  ASSERT_EQ(r.status, kExitOk) << r.err;
  const nlohmann::json doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["vcpus"]["a"].get<int>(), 1);
  EXPECT_EQ(doc["vcpus"]["b"].get<int>(), 1);
  EXPECT_EQ(doc["vcpus"]["c"].get<int>(), 1);
}

TEST(WeightsCli, TableShowsEveryVmWithFourDecimals) {
  const Result r = weights({"--cpus", "4", "A=2", "B=1"});
  ASSERT_EQ(r.status, kExitOk) << r.err;
  EXPECT_NE(r.out.find("VCPUS"), std::string::npos) << r.out;
  std::istringstream lines(r.out);
  std::string header, name;
  std::getline(lines, header);
  double priority = 0, weight = 0;
  int vcpus = 0;
  lines >> name >> priority >> weight >> vcpus;
  EXPECT_EQ(name, "A");
  EXPECT_EQ(priority, 2.0);
  EXPECT_EQ(weight, 0.3571);
  EXPECT_EQ(vcpus, 1);
  lines >> name >> priority >> weight >> vcpus;
  EXPECT_EQ(name, "B");
  EXPECT_EQ(weight, 0.6429);
  EXPECT_EQ(vcpus, 3);
}

TEST(WeightsCli, TableWithoutCpusHasNoVcpusColumn) {
  const Result r = weights({"A=2", "B=1"});
  ASSERT_EQ(r.status, kExitOk) << r.err;
  EXPECT_EQ(r.out.find("VCPUS"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("0.6429"), std::string::npos) << r.out;
}

TEST(WeightsCli, HelpExplainsAndSucceeds) {
  const Result r = weights({"--help"});
  EXPECT_EQ(r.status, kExitOk);
  for (const char* word : {"--alpha", "--cpus", "--json", "NAME=PRIORITY", "Exit status"}) {
    EXPECT_NE(r.out.find(word), std::string::npos) << word;
  }
}

TEST(WeightsCli, IsListedInTheTopLevelHelp) {
  std::ostringstream out, err;
  EXPECT_EQ(run({"llmorch", "--help"}, {out, err}), kExitOk);
  EXPECT_NE(out.str().find("weights"), std::string::npos);
}

// Boost.Program_options 1.74 loops forever in what() for an option named like its own placeholder.
TEST(Cli, AnOptionNamedLikeBoostsPlaceholderIsAUsageErrorNotAHang) {
  const Result r = weights({"--%canonical_option%", "a=1"});
  EXPECT_EQ(r.status, kExitUsage);
  EXPECT_NE(r.err.find("unrecognised option '--?canonical_option?'"), std::string::npos) << r.err;
}

TEST(Cli, VersionPrintsTheProjectVersion) {
  for (const char* flag : {"--version", "version"}) {
    std::ostringstream out, err;
    EXPECT_EQ(run({"llmorch", flag}, {out, err}), kExitOk);
    EXPECT_EQ(out.str(), std::string("llmorch ") + LLMORCH_TEST_VERSION + "\n");
  }
}

// Every usage error exits 2, prints nothing on stdout and names the bad argument on stderr.
struct BadArgs {
  std::vector<std::string> args;
  std::string named;
};

class WeightsCliUsage : public ::testing::TestWithParam<BadArgs> {};

TEST_P(WeightsCliUsage, ExitsTwoNamingTheBadArgument) {
  const Result r = weights(GetParam().args);
  EXPECT_EQ(r.status, kExitUsage);
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_NE(r.err.find(GetParam().named), std::string::npos) << r.err;
}

INSTANTIATE_TEST_SUITE_P(
    BadArguments, WeightsCliUsage,
    ::testing::Values(BadArgs{{"a=0"}, "'a'"}, BadArgs{{"a=1", "b=-3"}, "'b'"}, BadArgs{{"a=fast"}, "'fast'"},
                      BadArgs{{"a=nan"}, "'a'"}, BadArgs{{"a=inf"}, "'a'"}, BadArgs{{"a=2x"}, "'2x'"},
                      BadArgs{{"a="}, "'a'"}, BadArgs{{"a"}, "NAME=PRIORITY"}, BadArgs{{"=1"}, "NAME=PRIORITY"},
                      BadArgs{{"--alpha", "1.5", "a=1"}, "--alpha"}, BadArgs{{"--alpha=-0.1", "a=1"}, "--alpha"},
                      BadArgs{{"--alpha", "much", "a=1"}, "alpha"}, BadArgs{{"--cpus", "0", "a=1"}, "--cpus"},
                      BadArgs{{"--cpus", "two", "a=1"}, "cpus"}, BadArgs{{"a=1", "a=2"}, "'a'"},
                      BadArgs{{}, "NAME=PRIORITY"}, BadArgs{{"--bogus", "a=1"}, "--bogus"}));

}  // namespace
}  // namespace llmorch::cli
