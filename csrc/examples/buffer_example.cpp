// Using eor's replay buffer from plain C++ (no Python): fill a buffer with a toy environment's
// transitions, draw RAVL-style mixed batches, save and reload it.
//
//   cmake -S csrc/examples -B build/example && cmake --build build/example &&
//   build/example/buffer_example
#include <cmath>
#include <cstdio>
#include <vector>

#include "eor/replay_buffer.hpp"

int main() {
  constexpr std::size_t kObs = 17, kAct = 6, kBatch = 256, kReal = 12;
  eor::ReplayBuffer real(10000, kObs, kAct, /*seed=*/0);
  eor::ReplayBuffer model(5000, kObs, kAct, /*seed=*/1);

  // A toy "environment": obs drifts by the action; reward = -|obs|^2.
  std::vector<float> obs(kObs, 0.0f);
  for (eor::ReplayBuffer* buf : {&real, &model}) {
    const std::size_t n = buf->capacity() + 123;  // wraps around
    std::vector<float> o, a, r, o2, d;
    for (std::size_t t = 0; t < n; ++t) {
      std::vector<float> act(kAct), next(kObs);
      for (std::size_t j = 0; j < kAct; ++j) act[j] = std::sin(0.1f * static_cast<float>(t + j));
      float reward = 0.0f;
      for (std::size_t j = 0; j < kObs; ++j) {
        next[j] = 0.9f * obs[j] + 0.1f * act[j % kAct];
        reward -= next[j] * next[j];
      }
      o.insert(o.end(), obs.begin(), obs.end());
      a.insert(a.end(), act.begin(), act.end());
      r.push_back(reward);
      o2.insert(o2.end(), next.begin(), next.end());
      d.push_back(0.0f);
      obs = next;
    }
    const std::size_t stored = buf->add({o.data(), a.data(), r.data(), o2.data(), d.data(), n});
    std::printf("added %zu transitions, buffer holds %zu of %zu\n", stored, buf->size(),
                buf->capacity());
  }

  std::vector<float> b_obs(kBatch * kObs), b_act(kBatch * kAct), b_rew(kBatch),
      b_next(kBatch * kObs), b_done(kBatch);
  const eor::BatchView batch{b_obs.data(), b_act.data(), b_rew.data(), b_next.data(),
                             b_done.data()};
  double mean_reward = 0.0;
  for (int update = 0; update < 100; ++update) {
    eor::sample_mixed({&real, &model}, {kReal, kBatch - kReal}, /*replace=*/false, batch);
    for (float r : b_rew) mean_reward += r;
  }
  std::printf("mean reward over 100 mixed batches of %zu: %.4f\n", kBatch,
              mean_reward / (100.0 * kBatch));

  model.save("buffer_example.eorbuf");
  auto reloaded = eor::ReplayBuffer::load("buffer_example.eorbuf");
  std::remove("buffer_example.eorbuf");
  const bool same = reloaded->size() == model.size() && reloaded->rng_state() == model.rng_state();
  std::printf("save/load round trip: %s\n", same ? "ok" : "MISMATCH");
  return same && std::isfinite(mean_reward) ? 0 : 1;
}
