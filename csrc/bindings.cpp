// eor._core: registration only, one Register<Thing> per core header. The argument checks, numpy
// marshalling and GIL handling are in python/adapters.hpp and python/numpy_helpers.hpp.
#include <pybind11/pybind11.h>

#include "eor/random.hpp"
#include "eor/replay_buffer.hpp"
#include "python/adapters.hpp"

namespace py = pybind11;
namespace ep = eor::python;

// eor/random.hpp
void RegisterRandom(py::module_& m) {
  py::class_<eor::Xoshiro256>(m, "Xoshiro256",
                              "xoshiro256** seeded by splitmix64: the buffer's generator, exposed "
                              "so tests can check its stream against the Python model.")
      .def(py::init(&ep::make_generator), py::arg("seed") = 0)
      .def("next", &eor::Xoshiro256::next, "Next raw 64-bit output.")
      .def("bounded", &ep::generator_bounded, py::arg("n"),
           "Uniform integer in [0, n) (Lemire's method).")
      .def("distinct", &ep::generator_distinct, py::arg("n"), py::arg("k"),
           "k distinct integers in [0, n) (sparse Fisher-Yates).")
      .def_property_readonly("state", &ep::generator_state);
}

// eor/replay_buffer.hpp
void RegisterReplayBuffer(py::module_& m) {
  using eor::ReplayBuffer;
  py::register_exception<eor::BufferFileError>(m, "BufferFileError", PyExc_ValueError);

  py::class_<ReplayBuffer>(m, "ReplayBufferCore",
                           "C++ FIFO replay buffer; use eor.ReplayBuffer, which wraps it.")
      .def(py::init(&ep::make_buffer), py::arg("capacity"), py::arg("obs_dim"), py::arg("act_dim"),
           py::arg("seed") = 0)
      .def_static("load", &ep::load_buffer, py::arg("path"))
      .def_property_readonly("capacity", &ReplayBuffer::capacity)
      .def_property_readonly("obs_dim", &ReplayBuffer::obs_dim)
      .def_property_readonly("act_dim", &ReplayBuffer::act_dim)
      .def_property_readonly("row_width", &ReplayBuffer::row_width)
      .def_property_readonly("seed", &ReplayBuffer::seed)
      .def_property_readonly("position", &ReplayBuffer::position)
      .def("__len__", &ReplayBuffer::size)
      .def("clear", &ReplayBuffer::clear, py::call_guard<py::gil_scoped_release>())
      .def("add", &ep::buffer_add)
      .def("sample", &ep::buffer_sample)
      .def("sample_obs", &ep::buffer_sample_obs)
      .def("sample_indices", &ep::buffer_sample_indices)
      .def("gather", &ep::buffer_gather)
      .def("fields", &ep::buffer_fields)
      .def("rng_state", &ep::buffer_rng_state)
      .def("set_rng_state", &ep::buffer_set_rng_state)
      .def("save", &ReplayBuffer::save, py::call_guard<py::gil_scoped_release>());

  m.def("sample_mixed", &ep::buffers_sample_mixed);
  m.attr("FILE_VERSION") = ReplayBuffer::kFileVersion;
}

PYBIND11_MODULE(_core, m) {
  m.doc() = "eor C++ core: the replay buffer (csrc/include/eor/replay_buffer.hpp).";
  RegisterRandom(m);
  RegisterReplayBuffer(m);
}
