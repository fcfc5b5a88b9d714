// Unit tests for csrc/include/eor/random.hpp: determinism, ranges, distinctness, uniformity.
#include "eor/random.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>
#include <stdexcept>
#include <vector>

#include "check.hpp"

namespace {

void test_same_seed_same_stream() {
  eor::Xoshiro256 a(42), b(42), c(43);
  bool differs = false;
  for (int i = 0; i < 1000; ++i) {
    const std::uint64_t x = a.next(), y = b.next(), z = c.next();
    CHECK(x == y);
    differs = differs || x != z;
  }
  CHECK(differs);
}

void test_state_round_trip() {
  eor::Xoshiro256 g(7);
  for (int i = 0; i < 10; ++i) g.next();
  const auto state = g.state();
  std::vector<std::uint64_t> first, again;
  for (int i = 0; i < 20; ++i) first.push_back(g.next());
  g.set_state(state);
  for (int i = 0; i < 20; ++i) again.push_back(g.next());
  CHECK(first == again);
  CHECK_THROWS(g.set_state({0, 0, 0, 0}), std::invalid_argument, "all-zero");
}

void test_portable_multiply_matches() {
  eor::Xoshiro256 g(1);
  for (int i = 0; i < 10000; ++i) {
    const std::uint64_t a = g.next(), b = i % 2 ? g.next() : g.next() >> (i % 64);
    std::uint64_t lo1 = 0, lo2 = 0;
    const std::uint64_t hi1 = eor::mul_hi_lo(a, b, lo1), hi2 = eor::mul_hi_lo_portable(a, b, lo2);
    CHECK(hi1 == hi2 && lo1 == lo2);
  }
  std::uint64_t lo = 0;
  CHECK(eor::mul_hi_lo_portable(~0ULL, ~0ULL, lo) == ~0ULL - 1 && lo == 1);
}

void test_bounded_range_and_uniformity() {
  eor::Xoshiro256 g(3);
  for (std::uint64_t n : {1ULL, 2ULL, 3ULL, 10ULL, 1000003ULL, (1ULL << 63) + 5, ~0ULL}) {
    for (int i = 0; i < 1000; ++i) CHECK(g.bounded(n) < n);
  }
  // chi-square over 20 bins, 200,000 draws; 19 dof, bound 52 has an upper tail below 1e-4.
  const int bins = 20, draws = 200000;
  std::vector<double> counts(bins, 0.0);
  for (int i = 0; i < draws; ++i) counts[g.bounded(bins)] += 1.0;
  double chi2 = 0.0;
  const double expected = static_cast<double>(draws) / bins;
  for (double c : counts) chi2 += (c - expected) * (c - expected) / expected;
  CHECK(chi2 < 52.0);
}

void test_distinct_sampler() {
  eor::Xoshiro256 g(5);
  eor::DistinctSampler sampler;
  for (std::uint64_t n : {1ULL, 2ULL, 17ULL, 256ULL, 100000ULL, 1ULL << 40}) {
    for (std::size_t k : {std::size_t{1}, std::size_t{2}, std::size_t{17}, std::size_t{256}}) {
      if (k > n) continue;
      std::vector<std::int64_t> out(k);
      for (int rep = 0; rep < 20; ++rep) {  // reuses the table across calls (generation stamps)
        sampler.sample(g, n, k, out.data());
        std::set<std::int64_t> seen(out.begin(), out.end());
        CHECK(seen.size() == k);
        CHECK(*seen.begin() >= 0 && static_cast<std::uint64_t>(*seen.rbegin()) < n);
      }
    }
  }
  // k == n is a permutation
  std::vector<std::int64_t> perm(1000);
  sampler.sample(g, 1000, 1000, perm.data());
  std::sort(perm.begin(), perm.end());
  for (std::int64_t i = 0; i < 1000; ++i) CHECK(perm[static_cast<std::size_t>(i)] == i);
  std::vector<std::int64_t> one(1);
  CHECK_THROWS(sampler.sample(g, 3, 4, one.data()), std::invalid_argument, "k > n");
}

}  // namespace

int main() {
  RUN(test_same_seed_same_stream);
  RUN(test_state_round_trip);
  RUN(test_portable_multiply_matches);
  RUN(test_bounded_range_and_uniformity);
  RUN(test_distinct_sampler);
  return TEST_MAIN_RESULT();
}
