// The Python-facing methods of eor._core: each checks its arguments, marshals numpy arrays with
// numpy_helpers.hpp, releases the GIL around the core call and returns Python objects. No
// algorithm lives here; bindings.cpp registers these functions.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "eor/random.hpp"
#include "eor/replay_buffer.hpp"
#include "numpy_helpers.hpp"

namespace eor {
namespace python EOR_PY_HIDDEN {

// ---------------------------------------------------------------------------- Xoshiro256

inline Xoshiro256 make_generator(const py::object& seed) {
  return Xoshiro256(checked_u64(seed, "seed"));
}

inline std::uint64_t generator_bounded(Xoshiro256& g, const py::object& n) {
  const std::uint64_t v = checked_u64(n, "n");
  if (v == 0) throw py::value_error("bounded: n must be >= 1");
  return g.bounded(v);
}

inline py::array_t<std::int64_t> generator_distinct(Xoshiro256& g, std::uint64_t n,
                                                    std::int64_t k) {
  const std::size_t kk = checked_count(k, "k");
  if (kk > n) throw py::value_error("distinct: k > n");
  py::array_t<std::int64_t> out(static_cast<py::ssize_t>(kk));
  DistinctSampler sampler;
  sampler.sample(g, n, kk, out.mutable_data());
  return out;
}

inline py::tuple generator_state(const Xoshiro256& g) {
  const auto& s = g.state();
  return py::make_tuple(s[0], s[1], s[2], s[3]);
}

// ---------------------------------------------------------------------------- ReplayBuffer

inline std::unique_ptr<ReplayBuffer> make_buffer(std::int64_t capacity, std::int64_t obs_dim,
                                                 std::int64_t act_dim, const py::object& seed) {
  if (capacity < 1) {
    throw py::value_error("capacity must be >= 1, got " + std::to_string(capacity));
  }
  if (obs_dim < 1) throw py::value_error("obs_dim must be >= 1, got " + std::to_string(obs_dim));
  if (act_dim < 0) throw py::value_error("act_dim must be >= 0, got " + std::to_string(act_dim));
  return std::make_unique<ReplayBuffer>(
      static_cast<std::size_t>(capacity), static_cast<std::size_t>(obs_dim),
      static_cast<std::size_t>(act_dim), checked_u64(seed, "seed"));
}

inline std::unique_ptr<ReplayBuffer> load_buffer(const std::string& path) {
  py::gil_scoped_release release;
  return ReplayBuffer::load(path);
}

inline std::size_t buffer_add(ReplayBuffer& self, const py::object& obs, const py::object& act,
                              const py::object& rew, const py::object& next_obs,
                              const py::object& done, bool drop_nonfinite) {
  const InputRows rows(obs, act, rew, next_obs, done, self.obs_dim(), self.act_dim());
  py::gil_scoped_release release;
  return self.add(rows.view(), drop_nonfinite);
}

inline py::object buffer_sample(ReplayBuffer& self, std::int64_t batch_size, bool replace,
                                const py::object& out) {
  const std::size_t k = checked_count(batch_size, "batch_size");
  py::object holder;
  const BatchView view = batch_view(out, k, self.obs_dim(), self.act_dim(), "sample", holder);
  {
    py::gil_scoped_release release;
    self.sample(k, replace, view);
  }
  return holder;
}

inline py::object buffer_sample_obs(ReplayBuffer& self, std::int64_t n, bool replace,
                                    const py::object& out) {
  const std::size_t k = checked_count(n, "n");
  const std::size_t s = self.obs_dim();
  py::object holder;
  float* dst;
  if (out.is_none()) {
    OutArray arr({static_cast<py::ssize_t>(k), static_cast<py::ssize_t>(s)});
    dst = arr.mutable_data();
    holder = std::move(arr);
  } else {
    py::dict wrapped;
    wrapped["obs"] = out;
    dst = out_field(wrapped, "obs", k, s, "sample_obs");
    holder = out;
  }
  {
    py::gil_scoped_release release;
    self.sample_obs(k, replace, dst);
  }
  return holder;
}

/// `buffers` holds ReplayBufferCore objects (eor.buffer.sample_mixed unwraps eor.ReplayBuffer).
inline py::object buffers_sample_mixed(const py::sequence& buffers, const py::sequence& counts,
                                       bool replace, const py::object& out) {
  const std::size_t nb = static_cast<std::size_t>(py::len(buffers));
  if (static_cast<std::size_t>(py::len(counts)) != nb) {
    throw py::value_error("sample_mixed: got " + std::to_string(nb) + " buffers but " +
                          std::to_string(py::len(counts)) + " counts");
  }
  if (nb == 0) throw py::value_error("sample_mixed: buffers must not be empty");
  std::vector<ReplayBuffer*> bufs(nb);
  std::vector<std::size_t> ks(nb);
  std::size_t total = 0;
  for (std::size_t i = 0; i < nb; ++i) {
    py::handle b = buffers[i];
    if (!py::isinstance<ReplayBuffer>(b)) {
      throw py::type_error("sample_mixed: buffers[" + std::to_string(i) +
                           "] must be an eor.ReplayBuffer, got " + type_name(b));
    }
    bufs[i] = b.cast<ReplayBuffer*>();
    py::handle c = counts[i];
    if (!py::isinstance<py::int_>(c)) {
      throw py::type_error("sample_mixed: counts[" + std::to_string(i) + "] must be an int");
    }
    const auto count = c.cast<std::int64_t>();
    if (count < 0) {
      throw py::value_error("counts[" + std::to_string(i) + "] must be >= 0, got " +
                            std::to_string(count));
    }
    ks[i] = static_cast<std::size_t>(count);
    total += ks[i];
  }
  py::object holder;
  const BatchView view =
      batch_view(out, total, bufs[0]->obs_dim(), bufs[0]->act_dim(), "sample_mixed", holder);
  {
    py::gil_scoped_release release;
    eor::sample_mixed(bufs, ks, replace, view);
  }
  return holder;
}

inline py::array_t<std::int64_t> buffer_sample_indices(ReplayBuffer& self, std::int64_t k,
                                                       bool replace) {
  const std::size_t n = checked_count(k, "k");
  py::array_t<std::int64_t> idx(static_cast<py::ssize_t>(n));
  std::int64_t* dst = idx.mutable_data();
  {
    py::gil_scoped_release release;
    self.sample_indices(n, replace, dst);
  }
  return idx;
}

inline py::object buffer_gather(const ReplayBuffer& self, const py::object& indices,
                                const py::object& out) {
  IndexArray idx = IndexArray::ensure(indices);
  if (!idx || idx.ndim() != 1) throw py::value_error("gather: indices must be a 1-D integer array");
  const std::size_t k = static_cast<std::size_t>(idx.shape(0));
  py::object holder;
  const BatchView view = batch_view(out, k, self.obs_dim(), self.act_dim(), "gather", holder);
  {
    py::gil_scoped_release release;
    self.gather(idx.data(), k, view);
  }
  return holder;
}

/// Read-only views of the stored rows (slots [0, len)). Each view's base is the buffer object,
/// whose storage is fixed for its life (replay_buffer.hpp: nothing replaces it), so a view can
/// never outlive the memory it reads.
inline py::dict buffer_fields(const py::object& self_obj) {
  const ReplayBuffer& self = self_obj.cast<const ReplayBuffer&>();
  const auto n = static_cast<py::ssize_t>(self.size());
  const std::size_t s = self.obs_dim(), a = self.act_dim();
  const auto row_bytes = static_cast<py::ssize_t>(self.row_stride() * sizeof(float));
  const float* base = self.data();
  py::dict d;
  d["obs"] = readonly_view(base, n, s, row_bytes, self_obj);
  d["act"] = readonly_view(base + s, n, a, row_bytes, self_obj);
  d["rew"] = readonly_view(base + s + a, n, 0, row_bytes, self_obj);
  d["next_obs"] = readonly_view(base + s + a + 1, n, s, row_bytes, self_obj);
  d["done"] = readonly_view(base + 2 * s + a + 1, n, 0, row_bytes, self_obj);
  return d;
}

inline py::tuple buffer_rng_state(const ReplayBuffer& self) {
  const auto s = self.rng_state();
  return py::make_tuple(s[0], s[1], s[2], s[3]);
}

inline void buffer_set_rng_state(ReplayBuffer& self, const py::sequence& state) {
  if (py::len(state) != 4) {
    throw py::value_error("set_state: expected 4 unsigned 64-bit words, got " +
                          std::to_string(py::len(state)));
  }
  Xoshiro256::State s{};
  for (std::size_t i = 0; i < 4; ++i) {
    const std::string name = "state[" + std::to_string(i) + "]";
    s[i] = checked_u64(state[i], name.c_str());
  }
  self.set_rng_state(s);
}

}  // namespace python EOR_PY_HIDDEN
}  // namespace eor
