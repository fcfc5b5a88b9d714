// eor._core: Python registration of the header-only core, one Register<Thing> per header.
// No algorithm lives here: argument checking, numpy <-> pointer plumbing and GIL handling only.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "eor/random.hpp"
#include "eor/replay_buffer.hpp"

namespace py = pybind11;

namespace {

using eor::BatchView;
using eor::ReplayBuffer;
using InArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using OutArray = py::array_t<float, py::array::c_style>;
using IndexArray = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;

constexpr const char* kFields[5] = {"obs", "act", "rew", "next_obs", "done"};

std::string shape_str(const py::array& a) {
  std::string s = "[";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + "]";
}

std::size_t checked_count(std::int64_t n, const char* name) {
  if (n < 0) throw py::value_error(std::string(name) + " must be >= 0, got " + std::to_string(n));
  return static_cast<std::size_t>(n);
}

std::uint64_t checked_seed(const py::object& seed) {
  if (!py::isinstance<py::int_>(seed) || py::isinstance<py::bool_>(seed)) {
    throw py::type_error("seed must be an int in [0, 2**64), got " +
                         std::string(py::str(py::type::of(seed).attr("__name__"))));
  }
  const unsigned long long v = PyLong_AsUnsignedLongLong(seed.ptr());
  if (PyErr_Occurred()) {
    PyErr_Clear();
    throw py::value_error("seed must be an int in [0, 2**64), got " + std::string(py::str(seed)));
  }
  return static_cast<std::uint64_t>(v);
}

// Converts one input field to C-contiguous float32 (a single pass for float64 input) and checks
// its shape: `width` > 0 means [n, width]; width == 0 means [n] (or [n, 1]).
InArray input_field(const py::handle& obj, const char* name, std::size_t width) {
  InArray arr = InArray::ensure(obj);
  if (!arr) {
    throw py::type_error(std::string("add: ") + name + " must be a numeric array, got " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))));
  }
  const bool ok = width > 0 ? (arr.ndim() == 2 && arr.shape(1) == static_cast<py::ssize_t>(width))
                            : (arr.ndim() == 1 || (arr.ndim() == 2 && arr.shape(1) == 1));
  if (!ok) {
    const std::string expected =
        width > 0 ? "[n, " + std::to_string(width) + "]" : std::string("[n] (or [n, 1])");
    throw py::value_error(std::string("add: ") + name + " must have shape " + expected + ", got " +
                          shape_str(arr));
  }
  return arr;
}

// An interned Python str for a field name (created once, kept for the life of the process).
PyObject* interned(const char* name) {
  static PyObject* keys[5] = {nullptr, nullptr, nullptr, nullptr, nullptr};
  for (int i = 0; i < 5; ++i) {
    if (std::strcmp(name, kFields[i]) == 0) {
      if (keys[i] == nullptr) keys[i] = PyUnicode_InternFromString(kFields[i]);
      return keys[i];
    }
  }
  throw std::logic_error("unknown field name");
}

// One caller-provided output array: float32, C-contiguous, writeable, shape [k, width] or [k]
// (width 0; [k, 1] is accepted too).
float* out_field(const py::object& out, const char* name, std::size_t k, std::size_t width,
                 const char* what) {
  // The hot loop passes the same dict every call: interned keys and a direct dict lookup keep
  // this check well under a microsecond for all five fields.
  PyObject* key = interned(name);
  PyObject* found = nullptr;
  if (PyDict_CheckExact(out.ptr())) {
    found = PyDict_GetItemWithError(out.ptr(), key);  // borrowed
    if (found != nullptr) Py_INCREF(found);
  } else {
    found = PyObject_GetItem(out.ptr(), key);  // new reference
  }
  if (found == nullptr) {
    PyErr_Clear();
    throw py::value_error(std::string(what) + ": out has no entry '" + name + "'");
  }
  const py::object item = py::reinterpret_steal<py::object>(found);
  const py::ssize_t rows = static_cast<py::ssize_t>(k), cols = static_cast<py::ssize_t>(width);
  bool ok = OutArray::check_(item);
  if (ok) {
    auto arr = py::reinterpret_borrow<py::array>(item);
    ok = arr.writeable() && arr.ndim() >= 1 && arr.shape(0) == rows &&
         (width > 0 ? (arr.ndim() == 2 && arr.shape(1) == cols)
                    : (arr.ndim() == 1 || (arr.ndim() == 2 && arr.shape(1) == 1)));
    if (ok) return static_cast<float*>(arr.mutable_data());
  }
  const std::string shape = width > 0 ? "[" + std::to_string(k) + ", " + std::to_string(width) + "]"
                                      : "[" + std::to_string(k) + "]";
  std::string got = std::string(py::str(py::type::of(item).attr("__name__")));
  if (py::isinstance<py::array>(item)) {
    auto arr = py::reinterpret_borrow<py::array>(item);
    got = std::string(py::str(arr.dtype())) + " array of shape " + shape_str(arr) +
          (arr.writeable() ? "" : " (read-only)");
  }
  throw py::value_error(std::string(what) + ": out['" + name +
                        "'] must be a writeable C-contiguous float32 array of shape " + shape +
                        ", got " + got);
}

// Either the caller's arrays (out is a mapping) or five fresh ones; `holder` is what we return.
BatchView batch_view(const py::object& out, std::size_t k, std::size_t s, std::size_t a,
                     const char* what, py::object& holder) {
  if (!out.is_none()) {
    holder = out;
    return {out_field(out, "obs", k, s, what), out_field(out, "act", k, a, what),
            out_field(out, "rew", k, 0, what), out_field(out, "next_obs", k, s, what),
            out_field(out, "done", k, 0, what)};
  }
  const auto rows = static_cast<py::ssize_t>(k);
  OutArray obs({rows, static_cast<py::ssize_t>(s)}), act({rows, static_cast<py::ssize_t>(a)}),
      rew(rows), next_obs({rows, static_cast<py::ssize_t>(s)}), done(rows);
  BatchView view{obs.mutable_data(), act.mutable_data(), rew.mutable_data(),
                 next_obs.mutable_data(), done.mutable_data()};
  py::dict d;
  d["obs"] = std::move(obs);
  d["act"] = std::move(act);
  d["rew"] = std::move(rew);
  d["next_obs"] = std::move(next_obs);
  d["done"] = std::move(done);
  holder = std::move(d);
  return view;
}

py::object add(ReplayBuffer& self, const py::object& obs, const py::object& act,
               const py::object& rew, const py::object& next_obs, const py::object& done,
               bool drop_nonfinite) {
  const std::size_t s = self.obs_dim(), a = self.act_dim();
  InArray arrs[5] = {input_field(obs, "obs", s), input_field(act, "act", a),
                     input_field(rew, "rew", 0), input_field(next_obs, "next_obs", s),
                     input_field(done, "done", 0)};
  const py::ssize_t n = arrs[0].shape(0);
  for (int i = 1; i < 5; ++i) {
    if (arrs[i].shape(0) != n) {
      throw py::value_error(std::string("add: ") + kFields[i] + " has " +
                            std::to_string(arrs[i].shape(0)) + " rows but obs has " +
                            std::to_string(n));
    }
  }
  const eor::TransitionsView view{arrs[0].data(), arrs[1].data(), arrs[2].data(),
                                  arrs[3].data(), arrs[4].data(), static_cast<std::size_t>(n)};
  std::size_t stored;
  {
    py::gil_scoped_release release;
    stored = self.add(view, drop_nonfinite);
  }
  return py::int_(stored);
}

py::object sample(ReplayBuffer& self, std::int64_t batch_size, bool replace,
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

py::object sample_obs(ReplayBuffer& self, std::int64_t n, bool replace, const py::object& out) {
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

py::object sample_mixed(const py::sequence& buffers, const py::sequence& counts, bool replace,
                        const py::object& out) {
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
                           "] must be an eor.ReplayBuffer, got " +
                           std::string(py::str(py::type::of(b).attr("__name__"))));
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

py::array sample_indices(ReplayBuffer& self, std::int64_t k, bool replace) {
  const std::size_t n = checked_count(k, "k");
  py::array_t<std::int64_t> idx(static_cast<py::ssize_t>(n));
  std::int64_t* dst = idx.mutable_data();
  {
    py::gil_scoped_release release;
    self.sample_indices(n, replace, dst);
  }
  return std::move(idx);
}

py::object gather(ReplayBuffer& self, const py::object& indices, const py::object& out) {
  IndexArray idx = IndexArray::ensure(indices);
  if (!idx || idx.ndim() != 1) {
    throw py::value_error("gather: indices must be a 1-D integer array");
  }
  const std::size_t k = static_cast<std::size_t>(idx.shape(0));
  py::object holder;
  const BatchView view = batch_view(out, k, self.obs_dim(), self.act_dim(), "gather", holder);
  {
    py::gil_scoped_release release;
    self.gather(idx.data(), k, view);
  }
  return holder;
}

// Read-only numpy views of the stored rows (slots [0, len)), kept alive by the buffer object.
py::dict fields(const py::object& self_obj) {
  const ReplayBuffer& self = self_obj.cast<const ReplayBuffer&>();
  const auto n = static_cast<py::ssize_t>(self.size());
  const std::size_t s = self.obs_dim(), a = self.act_dim();
  const auto row_stride = static_cast<py::ssize_t>(self.row_stride() * sizeof(float));
  const auto f = static_cast<py::ssize_t>(sizeof(float));
  const float* base = self.data();
  auto view = [&](std::size_t offset, std::size_t width) {
    py::array arr =
        width > 0 ? py::array(py::dtype::of<float>(), {n, static_cast<py::ssize_t>(width)},
                              {row_stride, f}, base + offset, self_obj)
                  : py::array(py::dtype::of<float>(), {n}, {row_stride}, base + offset, self_obj);
    py::detail::array_proxy(arr.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
    return arr;
  };
  py::dict d;
  d["obs"] = view(0, s);
  d["act"] = view(s, a);
  d["rew"] = view(s + a, 0);
  d["next_obs"] = view(s + a + 1, s);
  d["done"] = view(2 * s + a + 1, 0);
  return d;
}

py::tuple rng_state(const ReplayBuffer& self) {
  const auto s = self.rng_state();
  return py::make_tuple(s[0], s[1], s[2], s[3]);
}

void set_rng_state(ReplayBuffer& self, const py::sequence& state) {
  if (py::len(state) != 4) {
    throw py::value_error("set_state: expected 4 unsigned 64-bit words, got " +
                          std::to_string(py::len(state)));
  }
  eor::Xoshiro256::State s{};
  for (std::size_t i = 0; i < 4; ++i) s[i] = checked_seed(state[i]);
  self.set_rng_state(s);
}

}  // namespace

void RegisterRandom(py::module_& m) {
  py::class_<eor::Xoshiro256>(m, "Xoshiro256",
                              "xoshiro256** seeded by splitmix64: the buffer's generator, exposed "
                              "so tests can check its stream against the Python model.")
      .def(py::init([](const py::object& seed) { return eor::Xoshiro256(checked_seed(seed)); }),
           py::arg("seed") = 0)
      .def("next", &eor::Xoshiro256::next, "Next raw 64-bit output.")
      .def(
          "bounded",
          [](eor::Xoshiro256& g, const py::object& n) {
            const std::uint64_t v = checked_seed(n);
            if (v == 0) throw py::value_error("bounded: n must be >= 1");
            return g.bounded(v);
          },
          py::arg("n"), "Uniform integer in [0, n) (Lemire's method).")
      .def(
          "distinct",
          [](eor::Xoshiro256& g, std::uint64_t n, std::int64_t k) {
            const std::size_t kk = checked_count(k, "k");
            if (kk > n) throw py::value_error("distinct: k > n");
            py::array_t<std::int64_t> out(static_cast<py::ssize_t>(kk));
            eor::DistinctSampler sampler;
            sampler.sample(g, n, kk, out.mutable_data());
            return out;
          },
          py::arg("n"), py::arg("k"), "k distinct integers in [0, n) (sparse Fisher-Yates).")
      .def_property_readonly("state", [](const eor::Xoshiro256& g) {
        const auto& s = g.state();
        return py::make_tuple(s[0], s[1], s[2], s[3]);
      });
}

void RegisterReplayBuffer(py::module_& m) {
  py::register_exception<eor::BufferFileError>(m, "BufferFileError", PyExc_ValueError);

  py::class_<ReplayBuffer>(m, "ReplayBufferCore",
                           "C++ FIFO replay buffer; use eor.ReplayBuffer, which subclasses it.")
      .def(py::init([](std::int64_t capacity, std::int64_t obs_dim, std::int64_t act_dim,
                       const py::object& seed) {
             if (capacity < 1) {
               throw py::value_error("capacity must be >= 1, got " + std::to_string(capacity));
             }
             if (obs_dim < 1) {
               throw py::value_error("obs_dim must be >= 1, got " + std::to_string(obs_dim));
             }
             if (act_dim < 0) {
               throw py::value_error("act_dim must be >= 0, got " + std::to_string(act_dim));
             }
             return new ReplayBuffer(static_cast<std::size_t>(capacity),
                                     static_cast<std::size_t>(obs_dim),
                                     static_cast<std::size_t>(act_dim), checked_seed(seed));
           }),
           py::arg("capacity"), py::arg("obs_dim"), py::arg("act_dim"), py::arg("seed") = 0)
      .def_property_readonly("capacity", &ReplayBuffer::capacity)
      .def_property_readonly("obs_dim", &ReplayBuffer::obs_dim)
      .def_property_readonly("act_dim", &ReplayBuffer::act_dim)
      .def_property_readonly("row_width", &ReplayBuffer::row_width)
      .def_property_readonly("seed", &ReplayBuffer::seed)
      .def_property_readonly("position", &ReplayBuffer::position)
      .def("__len__", &ReplayBuffer::size)
      .def("clear", &ReplayBuffer::clear, py::call_guard<py::gil_scoped_release>())
      .def("_add", &add)
      .def("_sample", &sample)
      .def("_sample_obs", &sample_obs)
      .def("_sample_indices", &sample_indices)
      .def("_gather", &gather)
      .def("_fields", &fields)
      .def("_rng_state", &rng_state)
      .def("_set_rng_state", &set_rng_state)
      .def("_save", &ReplayBuffer::save, py::call_guard<py::gil_scoped_release>())
      .def("_load_into", &ReplayBuffer::load_into, py::call_guard<py::gil_scoped_release>());

  m.def("_sample_mixed", &sample_mixed);
  m.attr("FILE_VERSION") = ReplayBuffer::kFileVersion;
}

PYBIND11_MODULE(_core, m) {
  m.doc() = "eor C++ core: the replay buffer (csrc/include/eor/replay_buffer.hpp).";
  RegisterRandom(m);
  RegisterReplayBuffer(m);
}
