// `cairn bench`: runs scenarios, prints a table, optionally writes JSON (src/bench/bench.h).
#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "bench/bench.h"
#include "cairn/error.h"
#include "cli/cli.h"

namespace cairn::cli {

namespace {

struct BenchOptions {
  std::vector<std::string> scenarios;
  bool quick = false;
  std::string json_path;
  std::string svg_path;
  std::string dir;
};

std::string figure(double v) {
  if (v >= 100) return fmt::format("{:.0f}", v);
  if (v >= 1) return fmt::format("{:.2f}", v);
  return fmt::format("{:.3g}", v);
}

nlohmann::json to_json(const bench::Result& r) {
  nlohmann::json j = {{"scenario", r.scenario},   {"unit", r.unit}, {"cairn", r.cairn},
                      {"peer_name", r.peer_name}, {"peer", r.peer}, {"ratio", r.ratio},
                      {"goal", r.goal},           {"pass", r.pass}};
  if (!r.skipped.empty()) {
    j["cairn"] = nullptr;
    j["peer"] = nullptr;
    j["ratio"] = nullptr;
    j["pass"] = "skipped";  // the reason is in the table
  }
  return j;
}

// How far past its goal a result is: above 1, the goal is met.
double goal_score(const bench::Result& r) {
  if (r.lower_is_better) return r.ratio > 0 ? r.goal / r.ratio : 0;
  return r.goal > 0 ? r.ratio / r.goal : 0;
}

// Draws each measured scenario's goal score as a bar (log scale, a line at 1) with gnuplot.
void write_chart(const std::vector<bench::Result>& results, const std::string& svg_path) {
  std::size_t bars = 0;
  std::string data;
  for (const auto& r : results) {
    if (!r.skipped.empty()) continue;
    data += fmt::format("\"{}\" {}\n", r.scenario, goal_score(r));
    ++bars;
  }
  // Horizontal bars on a log scale, one per measured scenario, the goal as a dashed line at 1.
  std::string script = fmt::format(
      "set terminal svg size 900,{} dynamic font 'sans,12'\n"
      "set output '{}'\n"
      "set title 'cairn bench: each result over its goal (right of the line: goal met)' "
      "noenhanced\n"
      "set logscale x\n"
      "set xrange [0.1:1000]\n"
      "set xlabel 'result / goal'\n"
      "set yrange [{}:-0.6]\n"
      "set ytics noenhanced nomirror\n"
      "set lmargin 34\n"
      "set grid xtics\n"
      "set key off\n"
      "set style fill solid 0.8 border -1\n"
      "set arrow from first 1, graph 0 to first 1, graph 1 nohead dt 2 lw 2 lc rgb 'red'\n"
      "$data << EOD\n{}EOD\n"
      "plot $data using 2:0:(0.1):2:($0-0.35):($0+0.35):ytic(1) with boxxyerror "
      "lc rgb '#4472c4'\n",
      120 + 34 * bars, svg_path, static_cast<double>(bars) - 0.4, data);
  std::unique_ptr<FILE, int (*)(FILE*)> gnuplot(::popen("gnuplot", "w"), ::pclose);
  if (!gnuplot) throw IoError("cannot run gnuplot (scripts/setup installs gnuplot-nox)");
  std::fwrite(script.data(), 1, script.size(), gnuplot.get());
  if (::pclose(gnuplot.release()) != 0) {
    throw IoError("gnuplot could not draw " + svg_path + " (scripts/setup installs gnuplot-nox)");
  }
}

int run_bench(const BenchOptions& options) {
  std::vector<bench::Scenario> all = bench::all_scenarios();
  std::set<std::string> known;
  for (const auto& s : all)
    known.insert(s.name);
  for (const auto& name : options.scenarios) {
    if (!known.contains(name)) {
      std::string list;
      for (const auto& s : all)
        list += "\n  " + s.name;
      throw InvalidArgument(fmt::format("unknown scenario \"{}\"; scenarios:{}", name, list));
    }
  }
  bool tty = ::isatty(STDERR_FILENO) != 0;
  std::string base = options.dir.empty()
                         ? (std::filesystem::temp_directory_path() / "cairn-bench-XXXXXX").string()
                         : options.dir + "/cairn-bench-XXXXXX";
  if (::mkdtemp(base.data()) == nullptr) {
    throw IoError("cannot create a scratch directory like " + base);
  }
  std::vector<bench::Result> results;
  for (const auto& s : all) {
    if (!options.scenarios.empty() && std::find(options.scenarios.begin(), options.scenarios.end(),
                                                s.name) == options.scenarios.end()) {
      continue;
    }
    bench::Context ctx;
    ctx.quick = options.quick;
    ctx.dir = base + "/" + s.name;
    std::filesystem::create_directories(ctx.dir);
    ctx.progress = [&](std::string_view line) {
      if (tty) std::cerr << "\r\033[K" << s.name << ": " << line << std::flush;
    };
    try {
      results.push_back(s.run(ctx));
    } catch (...) {
      std::filesystem::remove_all(base);
      throw;
    }
    std::filesystem::remove_all(ctx.dir);
  }
  std::filesystem::remove_all(base);
  if (tty) std::cerr << "\r\033[K";

  std::cout << fmt::format("{:<30} {:>12} {:<24} {:>12} {:>8} {:>9}  {}\n", "scenario", "cairn",
                           "peer", "peer rate", "ratio", "goal", "result");
  for (const auto& r : results) {
    if (!r.skipped.empty()) {
      std::cout << fmt::format("{:<30} {:>12} {:<24} {:>12} {:>8} {:>9}  skipped: {}\n", r.scenario,
                               "-", r.peer_name, "-", "-",
                               (r.lower_is_better ? "<= " : ">= ") + figure(r.goal), r.skipped);
      continue;
    }
    std::cout << fmt::format("{:<30} {:>12} {:<24} {:>12} {:>8} {:>9}  {} ({})\n", r.scenario,
                             figure(r.cairn), r.peer_name, figure(r.peer), figure(r.ratio),
                             (r.lower_is_better ? "<= " : ">= ") + figure(r.goal),
                             r.pass ? "pass" : "FAIL", r.unit);
  }
  if (!options.svg_path.empty()) write_chart(results, options.svg_path);
  if (!options.json_path.empty()) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& r : results)
      out.push_back(to_json(r));
    std::ofstream file(options.json_path);
    file << out.dump(2) << "\n";
    if (!file) throw IoError("cannot write " + options.json_path);
  }
  return exit_ok;
}

}  // namespace

void add_bench_command(CLI::App& app, Action& action) {
  auto options = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand(
      "bench", "Measure cairn against real peers side by side and print the ratios");
  cmd->add_option("--scenario", options->scenarios, "Run only this scenario (repeatable)");
  cmd->add_flag("--quick", options->quick, "Small sizes: the whole run takes under a minute");
  cmd->add_option("--json", options->json_path, "Also write the results to this JSON file");
  cmd->add_option("--svg", options->svg_path,
                  "Also draw each result over its goal to this SVG file (needs gnuplot)");
  cmd->add_option("--dir", options->dir,
                  "Where to put scratch databases (default: the system temp directory)");
  cmd->callback([options, &action] { action = [options] { return run_bench(*options); }; });
}

}  // namespace cairn::cli
