// numpy <-> pointer marshalling for eor._core: argument checks with errors that name the argument,
// float32 input conversion, validation of caller-provided output arrays, and read-only views of
// C++-owned memory. Python-facing, so it lives beside bindings.cpp, not in the header-only core.
// Only public pybind11 API is used (no pybind11::detail).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "eor/replay_buffer.hpp"

// pybind11's types have hidden visibility, and so must anything that holds them.
#if defined(__GNUC__) && !defined(_WIN32)
#define EOR_PY_HIDDEN __attribute__((visibility("hidden")))
#else
#define EOR_PY_HIDDEN
#endif

namespace eor {
namespace python EOR_PY_HIDDEN {

namespace py = pybind11;

using InArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using OutArray = py::array_t<float, py::array::c_style>;
using IndexArray = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;

inline constexpr const char* kFields[5] = {"obs", "act", "rew", "next_obs", "done"};

inline std::string type_name(const py::handle& obj) {
  return std::string(py::str(py::type::of(obj).attr("__name__")));
}

inline std::string shape_str(const py::array& a) {
  std::string s = "[";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + "]";
}

inline std::size_t checked_count(std::int64_t n, const char* name) {
  if (n < 0) throw py::value_error(std::string(name) + " must be >= 0, got " + std::to_string(n));
  return static_cast<std::size_t>(n);
}

/// An int in [0, 2**64) (seeds, generator words); bool and other types are refused.
inline std::uint64_t checked_u64(const py::handle& value, const char* name) {
  if (!py::isinstance<py::int_>(value) || py::isinstance<py::bool_>(value)) {
    throw py::type_error(std::string(name) + " must be an int in [0, 2**64), got " +
                         type_name(value));
  }
  const unsigned long long v = PyLong_AsUnsignedLongLong(value.ptr());
  if (PyErr_Occurred()) {
    PyErr_Clear();
    throw py::value_error(std::string(name) + " must be an int in [0, 2**64), got " +
                          std::string(py::str(value)));
  }
  return static_cast<std::uint64_t>(v);
}

/// One input field as C-contiguous float32 (a single pass for float64 input), shape checked:
/// `width` > 0 means [n, width]; width == 0 means [n] (or [n, 1]).
inline InArray input_field(const py::handle& obj, const char* name, std::size_t width) {
  InArray arr = InArray::ensure(obj);
  if (!arr) {
    throw py::type_error(std::string("add: ") + name + " must be a numeric array, got " +
                         type_name(obj));
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

/// The five input fields of add(), converted and checked to have the same number of rows.
struct InputRows {
  InArray arrs[5];

  InputRows(const py::handle& obs, const py::handle& act, const py::handle& rew,
            const py::handle& next_obs, const py::handle& done, std::size_t s, std::size_t a)
      : arrs{input_field(obs, "obs", s), input_field(act, "act", a), input_field(rew, "rew", 0),
             input_field(next_obs, "next_obs", s), input_field(done, "done", 0)} {
    for (int i = 1; i < 5; ++i) {
      if (arrs[i].shape(0) != arrs[0].shape(0)) {
        throw py::value_error(std::string("add: ") + kFields[i] + " has " +
                              std::to_string(arrs[i].shape(0)) + " rows but obs has " +
                              std::to_string(arrs[0].shape(0)));
      }
    }
  }

  TransitionsView view() const {
    return {arrs[0].data(), arrs[1].data(), arrs[2].data(),
            arrs[3].data(), arrs[4].data(), static_cast<std::size_t>(arrs[0].shape(0))};
  }
};

/// An interned Python str for a field name (created once, kept for the life of the process).
inline PyObject* interned(const char* name) {
  static PyObject* keys[5] = {nullptr, nullptr, nullptr, nullptr, nullptr};
  for (int i = 0; i < 5; ++i) {
    if (std::strcmp(name, kFields[i]) == 0) {
      if (keys[i] == nullptr) keys[i] = PyUnicode_InternFromString(kFields[i]);
      return keys[i];
    }
  }
  throw std::logic_error("unknown field name");
}

/// One caller-provided output array: float32, C-contiguous, writeable, shape [k, width] or [k]
/// (width 0; [k, 1] is accepted too).
inline float* out_field(const py::object& out, const char* name, std::size_t k, std::size_t width,
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
  std::string got = type_name(item);
  if (py::isinstance<py::array>(item)) {
    auto arr = py::reinterpret_borrow<py::array>(item);
    got = std::string(py::str(arr.dtype())) + " array of shape " + shape_str(arr) +
          (arr.writeable() ? "" : " (read-only)");
  }
  throw py::value_error(std::string(what) + ": out['" + name +
                        "'] must be a writeable C-contiguous float32 array of shape " + shape +
                        ", got " + got);
}

/// Where a batch of k rows goes: the caller's arrays (`out` is a mapping) or five fresh ones.
/// `holder` receives what the Python call returns (`out` itself, or the new dict).
inline BatchView batch_view(const py::object& out, std::size_t k, std::size_t s, std::size_t a,
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

/// A read-only float32 view of C++-owned memory: `rows` rows `row_stride_bytes` apart, each
/// `width` floats ([rows, width]) or one float ([rows], width 0). `owner` becomes the array's
/// base, so the memory lives at least as long as the view.
inline py::array readonly_view(const float* data, py::ssize_t rows, std::size_t width,
                               py::ssize_t row_stride_bytes, const py::handle& owner) {
  const auto f = static_cast<py::ssize_t>(sizeof(float));
  py::array arr = width > 0
                      ? py::array(py::dtype::of<float>(), {rows, static_cast<py::ssize_t>(width)},
                                  {row_stride_bytes, f}, data, owner)
                      : py::array(py::dtype::of<float>(), {rows}, {row_stride_bytes}, data, owner);
  arr.attr("setflags")(py::arg("write") = false);
  return arr;
}

}  // namespace python EOR_PY_HIDDEN
}  // namespace eor
