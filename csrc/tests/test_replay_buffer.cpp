// Unit tests for csrc/include/eor/replay_buffer.hpp (the Python tests cover the bindings and
// the step-by-step comparison with the numpy reference).
#include "eor/replay_buffer.hpp"

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <limits>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "check.hpp"

namespace {

constexpr std::size_t S = 3, A = 2;

// n rows where every field of row i equals first + i.
struct Rows {
  std::vector<float> obs, act, rew, next_obs, done;
  Rows(std::size_t n, float first) {
    for (std::size_t i = 0; i < n; ++i) {
      const float v = first + static_cast<float>(i);
      obs.insert(obs.end(), S, v);
      act.insert(act.end(), A, v);
      rew.push_back(v);
      next_obs.insert(next_obs.end(), S, v);
      done.push_back(v);
    }
  }
  eor::TransitionsView view() const {
    return {obs.data(), act.data(), rew.data(), next_obs.data(), done.data(), rew.size()};
  }
};

struct Batch {
  std::vector<float> obs, act, rew, next_obs, done;
  explicit Batch(std::size_t k) : obs(k * S), act(k * A), rew(k), next_obs(k * S), done(k) {}
  eor::BatchView view() {
    return {obs.data(), act.data(), rew.data(), next_obs.data(), done.data()};
  }
  // Every field of row i holds the same value: the row was not torn.
  bool rows_whole() const {
    for (std::size_t i = 0; i < rew.size(); ++i) {
      const float v = rew[i];
      for (std::size_t j = 0; j < S; ++j)
        if (obs[i * S + j] != v || next_obs[i * S + j] != v) return false;
      for (std::size_t j = 0; j < A; ++j)
        if (act[i * A + j] != v) return false;
      if (done[i] != v) return false;
    }
    return true;
  }
};

void test_fifo_and_wraparound() {
  eor::ReplayBuffer buf(4, S, A, 0);
  CHECK(buf.size() == 0 && buf.capacity() == 4 && buf.row_width() == 2 * S + A + 2);
  CHECK(buf.row_stride() >= buf.row_width());
  CHECK(buf.add(Rows(3, 0).view()) == 3);
  CHECK(buf.size() == 3 && buf.position() == 3);
  CHECK(buf.add(Rows(5, 3).view()) == 5);  // rows 0..7 so far: slots hold 4 5 6 7
  CHECK(buf.size() == 4 && buf.position() == 0);
  CHECK(buf.add(Rows(2, 8).view()) == 2);  // slots: 8 9 6 7
  CHECK(buf.position() == 2);
  const float want[4] = {8, 9, 6, 7};
  for (std::size_t slot = 0; slot < 4; ++slot) {
    const float* row = buf.data() + slot * buf.row_stride();
    for (std::size_t j = 0; j < buf.row_width(); ++j) CHECK(row[j] == want[slot]);
  }
  CHECK(buf.add(Rows(9, 100).view()) == 9);  // more than capacity in one call: the last 4 stay
  std::set<float> kept;
  for (std::size_t slot = 0; slot < 4; ++slot) kept.insert(buf.data()[slot * buf.row_stride()]);
  CHECK((kept == std::set<float>{105, 106, 107, 108}));
  CHECK(buf.position() == (2 + 9) % 4);
  buf.clear();
  CHECK(buf.size() == 0 && buf.position() == 0);
}

void test_nonfinite_rows() {
  eor::ReplayBuffer buf(10, S, A, 0);
  Rows rows(5, 0);
  rows.act[1 * A + 1] = std::numeric_limits<float>::quiet_NaN();
  rows.done[3] = std::numeric_limits<float>::infinity();
  CHECK_THROWS(buf.add(rows.view()), std::invalid_argument, "2 of 5 rows contain NaN or inf");
  CHECK(buf.size() == 0);
  CHECK(buf.add(rows.view(), true) == 3);
  CHECK(buf.size() == 3);
  const float want[3] = {0, 2, 4};
  for (std::size_t slot = 0; slot < 3; ++slot)
    CHECK(buf.data()[slot * buf.row_stride()] == want[slot]);
}

void test_sample_distinct_and_errors() {
  eor::ReplayBuffer buf(100, S, A, 1);
  Batch one(1);
  CHECK_THROWS(buf.sample(1, false, one.view()), std::invalid_argument, "the buffer is empty");
  buf.add(Rows(50, 0).view());
  for (int rep = 0; rep < 50; ++rep) {
    Batch b(50);
    buf.sample(50, false, b.view());
    CHECK(b.rows_whole());
    CHECK(std::set<float>(b.rew.begin(), b.rew.end()).size() == 50);
  }
  Batch big(51);
  CHECK_THROWS(buf.sample(51, false, big.view()), std::invalid_argument,
               "cannot draw 51 distinct transitions from a buffer holding 50");
  buf.sample(51, true, big.view());  // with replacement: fine
  for (float v : big.rew) CHECK(v >= 0 && v < 50);
  std::vector<float> starts(20 * S);
  buf.sample_obs(20, false, starts.data());
  std::set<float> distinct;
  for (std::size_t i = 0; i < 20; ++i) distinct.insert(starts[i * S]);
  CHECK(distinct.size() == 20);
  const std::int64_t bad[2] = {3, 50};
  CHECK_THROWS(buf.gather(bad, 2, big.view()), std::out_of_range, "index 50 at position 1");
}

void test_same_seed_same_samples() {
  eor::ReplayBuffer a(1000, S, A, 9), b(1000, S, A, 9), c(1000, S, A, 10);
  for (auto* buf : {&a, &b, &c}) buf->add(Rows(1000, 0).view());
  std::vector<std::int64_t> ia(256), ib(256), ic(256);
  a.sample_indices(256, false, ia.data());
  b.sample_indices(256, false, ib.data());
  c.sample_indices(256, false, ic.data());
  CHECK(ia == ib);
  CHECK(ia != ic);
  const auto state = a.rng_state();
  a.sample_indices(256, false, ia.data());
  a.set_rng_state(state);
  a.sample_indices(256, false, ib.data());
  CHECK(ia == ib);
}

void test_sample_mixed() {
  eor::ReplayBuffer real(100, S, A, 1), model(100, S, A, 2), other(10, S + 1, A, 3);
  real.add(Rows(100, 0).view());
  model.add(Rows(100, 1000).view());
  Batch b(256 - 200);  // 6 + 50
  eor::sample_mixed({&real, &model}, {6, 50}, false, b.view());
  CHECK(b.rows_whole());
  for (std::size_t i = 0; i < 56; ++i) CHECK((i < 6) == (b.rew[i] < 1000));
  CHECK(std::set<float>(b.rew.begin(), b.rew.end()).size() == 56);
  CHECK_THROWS(eor::sample_mixed({&real, &model}, {6}, false, b.view()), std::invalid_argument,
               "2 buffers but 1 counts");
  CHECK_THROWS(eor::sample_mixed({&real, &other}, {6, 1}, false, b.view()), std::invalid_argument,
               "buffer 1 has obs_dim 4");
  eor::ReplayBuffer empty(5, S, A, 0);
  CHECK_THROWS(eor::sample_mixed({&real, &empty}, {6, 1}, false, b.view()), std::invalid_argument,
               "sample_mixed: buffer 1: the buffer is empty");
  eor::sample_mixed({&empty, &model}, {0, 56}, false, b.view());  // count 0: empty is fine
  CHECK(b.rows_whole());
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}
void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void test_save_load() {
  const std::string path = "eor_test_buffer.eorbuf";
  eor::ReplayBuffer buf(40, S, A, 77);
  buf.add(Rows(57, 0).view());
  std::vector<std::int64_t> idx(5);
  buf.sample_indices(5, false, idx.data());
  buf.save(path);
  auto loaded = eor::ReplayBuffer::load(path);
  CHECK(loaded->capacity() == 40 && loaded->obs_dim() == S && loaded->act_dim() == A);
  CHECK(loaded->size() == buf.size() && loaded->position() == buf.position());
  CHECK(loaded->seed() == 77 && loaded->rng_state() == buf.rng_state());
  bool same = true;
  for (std::size_t i = 0; i < 40 * buf.row_stride(); ++i)
    same = same && loaded->data()[i] == buf.data()[i];
  CHECK(same);

  const std::string good = read_file(path);
  CHECK(good.size() == eor::ReplayBuffer::kHeaderBytes + 40 * buf.row_width() * sizeof(float));
  write_file(path, good.substr(0, 100));
  CHECK_THROWS(eor::ReplayBuffer::load(path), eor::BufferFileError, "truncated");
  write_file(path, good.substr(0, good.size() - 4));
  CHECK_THROWS(eor::ReplayBuffer::load(path), eor::BufferFileError, "truncated");
  std::string bad = good;
  bad[0] = 'X';
  write_file(path, bad);
  CHECK_THROWS(eor::ReplayBuffer::load(path), eor::BufferFileError, "bad magic");
  bad = good;
  bad[30] = static_cast<char>(bad[30] ^ 1);
  write_file(path, bad);
  CHECK_THROWS(eor::ReplayBuffer::load(path), eor::BufferFileError, "header checksum");
  bad = good;
  bad[good.size() - 3] = static_cast<char>(bad[good.size() - 3] ^ 1);
  write_file(path, bad);
  CHECK_THROWS(eor::ReplayBuffer::load(path), eor::BufferFileError, "data checksum");
  std::remove(path.c_str());
  CHECK_THROWS(eor::ReplayBuffer::load(path), eor::BufferFileError, "cannot open");
}

void test_concurrent_add_and_sample() {
  eor::ReplayBuffer buf(1000, S, A, 0);
  buf.add(Rows(256, 0).view());
  std::atomic<bool> done{false};
  std::atomic<int> torn{0}, samples{0};
  std::thread writer([&] {
    while (samples == 0) std::this_thread::yield();  // start once the reader is running
    for (int i = 0; i < 400; ++i) {
      buf.add(Rows(300, 256.0f + 300.0f * static_cast<float>(i)).view());
    }
    done = true;
  });
  std::thread reader([&] {
    Batch b(256);
    do {
      buf.sample(256, false, b.view());
      if (!b.rows_whole()) ++torn;
      ++samples;
    } while (!done);
  });
  writer.join();
  reader.join();
  CHECK(torn == 0);
  CHECK(samples > 0);
}

void test_huge_capacity_lazily() {
  // 10M HalfCheetah transitions: 1.7 GB of address space, only touched where rows are written.
  eor::ReplayBuffer buf(10000000, 17, 6, 0);
  CHECK(buf.capacity() == 10000000 && buf.row_width() == 42 && buf.row_stride() == 48);
  std::vector<float> obs(17 * 10, 1.0f), act(6 * 10, 1.0f), rew(10, 1.0f), done(10, 0.0f);
  buf.add({obs.data(), act.data(), rew.data(), obs.data(), done.data(), 10});
  CHECK(buf.size() == 10);
}

}  // namespace

int main() {
  RUN(test_fifo_and_wraparound);
  RUN(test_nonfinite_rows);
  RUN(test_sample_distinct_and_errors);
  RUN(test_same_seed_same_samples);
  RUN(test_sample_mixed);
  RUN(test_save_load);
  RUN(test_concurrent_add_and_sample);
  RUN(test_huge_capacity_lazily);
  return TEST_MAIN_RESULT();
}
