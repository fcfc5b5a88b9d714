// Fixed-algorithm random numbers for the replay buffer.
//
// std::uniform_int_distribution and std::shuffle are implementation-defined, so the same seed
// would give different index streams under libstdc++, libc++ and MSVC. Everything here is a
// fully specified algorithm, so a seed gives the same stream on every platform and compiler:
//   - seeding: splitmix64 (Vigna) expands a 64-bit seed into the 256-bit state;
//   - generator: xoshiro256** (Blackman & Vigna, 2018);
//   - bounded integers: Lemire's multiply-shift with rejection (exactly uniform);
//   - distinct indices: a sparse Fisher-Yates shuffle (O(k) time and memory for k draws).
// eor/ref.py and tests/test_buffer.py hold a pure-Python model of the same stream.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <vector>

namespace eor {

/// splitmix64: advances `x` and returns the next output. Used only to seed xoshiro256**.
inline std::uint64_t splitmix64(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/// High 64 bits of the 128-bit product a * b, and the low 64 bits in `lo`, from 32-bit halves
/// (for compilers without unsigned __int128, e.g. MSVC).
inline std::uint64_t mul_hi_lo_portable(std::uint64_t a, std::uint64_t b, std::uint64_t& lo) {
  const std::uint64_t a_lo = a & 0xFFFFFFFFULL, a_hi = a >> 32;
  const std::uint64_t b_lo = b & 0xFFFFFFFFULL, b_hi = b >> 32;
  const std::uint64_t ll = a_lo * b_lo, lh = a_lo * b_hi, hl = a_hi * b_lo, hh = a_hi * b_hi;
  const std::uint64_t mid = (ll >> 32) + (lh & 0xFFFFFFFFULL) + (hl & 0xFFFFFFFFULL);
  lo = (mid << 32) | (ll & 0xFFFFFFFFULL);
  return hh + (lh >> 32) + (hl >> 32) + (mid >> 32);
}

/// High 64 bits of the 128-bit product a * b, and the low 64 bits in `lo`.
inline std::uint64_t mul_hi_lo(std::uint64_t a, std::uint64_t b, std::uint64_t& lo) {
#if defined(__SIZEOF_INT128__)
  __extension__ typedef unsigned __int128 u128;
  const u128 m = static_cast<u128>(a) * static_cast<u128>(b);
  lo = static_cast<std::uint64_t>(m);
  return static_cast<std::uint64_t>(m >> 64);
#else
  return mul_hi_lo_portable(a, b, lo);
#endif
}

/// xoshiro256**: 256-bit state, period 2^256 - 1, passes BigCrush. Not thread-safe by itself
/// (the replay buffer guards it with its own mutex).
class Xoshiro256 {
 public:
  using State = std::array<std::uint64_t, 4>;

  explicit Xoshiro256(std::uint64_t seed = 0) { reseed(seed); }

  /// State = four consecutive splitmix64 outputs starting from `seed`.
  void reseed(std::uint64_t seed) {
    std::uint64_t x = seed;
    for (auto& word : s_) word = splitmix64(x);
  }

  std::uint64_t next() {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  /// Uniform integer in [0, n), n >= 1 (Lemire 2019, "Fast random integer generation in an
  /// interval"): the high word of next() * n, rejecting the few low words that would bias it.
  std::uint64_t bounded(std::uint64_t n) {
    std::uint64_t lo = 0;
    std::uint64_t hi = mul_hi_lo(next(), n, lo);
    if (lo < n) {
      const std::uint64_t threshold = (0 - n) % n;  // 2^64 mod n
      while (lo < threshold) hi = mul_hi_lo(next(), n, lo);
    }
    return hi;
  }

  const State& state() const { return s_; }

  /// Restores a state from state(). The all-zero state is a fixed point of xoshiro and invalid.
  void set_state(const State& s) {
    if (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0) {
      throw std::invalid_argument("set_state: the all-zero xoshiro256** state is invalid");
    }
    s_ = s;
  }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  State s_{};
};

/// Draws k distinct integers from [0, n) in uniformly random order, in O(k) expected time.
///
/// Two regimes, both exactly uniform over ordered k-tuples of distinct values:
///  - 2k <= n (every training batch): rejection. Draw bounded(n) until the value is new (a small
///    hash set of the values so far). At most ~1.39k draws on average (k = n/2), usually
///    k + k^2/(2n); about one well-predicted probe per draw, ~5x faster than the shuffle below
///    at k = 256.
///  - 2k > n: sparse Fisher-Yates. Conceptually shuffle a = [0, 1, ..., n-1] for k steps,
///      for i in 0..k-1:  j = i + bounded(n - i);  out[i] = a[j];  a[j] = a[i],
///    storing only the entries of `a` that differ from the identity in an open-addressing table
///    (at most k of them), reused between calls and invalidated by a generation stamp.
class DistinctSampler {
 public:
  struct NoVisit {
    void operator()(std::uint64_t) const {}
  };

  /// `visit(value)` is called with each value as soon as it is final (the replay buffer uses it
  /// to prefetch the row while the next value is being drawn).
  template <class Rng, class Visit = NoVisit>
  void sample(Rng& rng, std::uint64_t n, std::size_t k, std::int64_t* out, Visit visit = {}) {
    if (k > n) throw std::invalid_argument("DistinctSampler: k > n");
    if (2 * static_cast<std::uint64_t>(k) <= n) {
      sample_rejection(rng, n, k, out, visit);
    } else {
      sample_shuffle(rng, n, k, out, visit);
    }
  }

 private:
  // Membership: a small open-addressing set of (value + 1), 0 = empty, load factor <= 1/4 so a
  // lookup is nearly always one probe of an L1-resident table (a bitmap over all n rows was
  // tried first: its random lines miss the cache once the gathered rows have evicted it). The
  // filled slots are reset afterwards, so the table is all-zero between calls.
  template <class Rng, class Visit>
  void sample_rejection(Rng& rng, std::uint64_t n, std::size_t k, std::int64_t* out, Visit& visit) {
    std::size_t size = 64;
    int shift = 58;
    while (size < 4 * k) {
      size <<= 1;
      --shift;
    }
    if (set_.size() < size) set_.assign(size, 0);  // only a prefix of `size` slots is used
    filled_.resize(k);
    const std::size_t mask = size - 1;
    for (std::size_t i = 0; i < k; ++i) {
      std::uint64_t r;
      std::size_t h;
      for (;;) {
        r = rng.bounded(n);
        h = static_cast<std::size_t>((r * 0x9E3779B97F4A7C15ULL) >> shift);
        while (set_[h] != 0 && set_[h] != r + 1) h = (h + 1) & mask;
        if (set_[h] == 0) break;  // new value; otherwise a repeat: draw again
      }
      set_[h] = r + 1;
      filled_[i] = h;
      out[i] = static_cast<std::int64_t>(r);
      visit(r);
    }
    for (std::size_t i = 0; i < k; ++i) set_[filled_[i]] = 0;
  }

  template <class Rng, class Visit>
  void sample_shuffle(Rng& rng, std::uint64_t n, std::size_t k, std::int64_t* out, Visit& visit) {
    prepare(k);
    for (std::size_t i = 0; i < k; ++i) {
      const std::uint64_t ui = static_cast<std::uint64_t>(i);
      const std::uint64_t j = ui + rng.bounded(n - ui);
      const std::uint64_t aj = get(j);
      const std::uint64_t ai = get(ui);
      out[i] = static_cast<std::int64_t>(aj);
      visit(aj);
      if (j != ui) set(j, ai);
    }
  }

  struct Slot {
    std::uint64_t key;
    std::uint64_t value;
    std::uint32_t stamp;
  };

  void prepare(std::size_t k) {
    std::size_t want = 16;
    while (want < 2 * k) want <<= 1;  // load factor <= 1/2 keeps probes short
    if (want > table_.size()) {
      table_.assign(want, Slot{0, 0, 0});
      stamp_ = 0;
    }
    mask_ = table_.size() - 1;
    shift_ = 64;
    for (std::size_t size = table_.size(); size > 1; size >>= 1) --shift_;
    if (++stamp_ == 0) {  // stamps wrapped after 2^32 calls: clear once, start again at 1
      for (auto& slot : table_) slot.stamp = 0;
      stamp_ = 1;
    }
  }

  // Fibonacci hashing: the top bits of key * 2^64/phi spread consecutive keys evenly.
  std::size_t home(std::uint64_t key) const {
    return static_cast<std::size_t>((key * 0x9E3779B97F4A7C15ULL) >> shift_);
  }

  std::uint64_t get(std::uint64_t key) const {
    for (std::size_t h = home(key);; h = (h + 1) & mask_) {
      const Slot& slot = table_[h];
      if (slot.stamp != stamp_) return key;  // absent: a[key] is still key
      if (slot.key == key) return slot.value;
    }
  }

  // Adds key to the table; false if it was already there.
  bool insert(std::uint64_t key) {
    for (std::size_t h = home(key);; h = (h + 1) & mask_) {
      Slot& slot = table_[h];
      if (slot.stamp != stamp_) {
        slot = Slot{key, key, stamp_};
        return true;
      }
      if (slot.key == key) return false;
    }
  }

  void set(std::uint64_t key, std::uint64_t value) {
    for (std::size_t h = home(key);; h = (h + 1) & mask_) {
      Slot& slot = table_[h];
      if (slot.stamp != stamp_) {
        slot = Slot{key, value, stamp_};
        return;
      }
      if (slot.key == key) {
        slot.value = value;
        return;
      }
    }
  }

  std::vector<std::uint64_t> set_;
  std::vector<std::size_t> filled_;
  std::vector<Slot> table_;
  std::size_t mask_ = 0;
  int shift_ = 64;
  std::uint32_t stamp_ = 0;
};

}  // namespace eor
