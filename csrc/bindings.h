// How each op's Python binding joins the module without an edit here: the op's own
// csrc/<op>.cpp defines `void bind_<op>(pybind11::module_&)` (its parameter record and its
// entry points _C.<op>_cpu / _C.<op>_cuda) and registers it with one static line,
//   [[maybe_unused]] const bool registered = register_binding("<op>", &bind_<op>);
// which runs when the extension loads, as torch ops register themselves with static objects.
// The module (bindings.cpp) then calls every registered binder, in name order.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>

namespace facesal {

using Binder = void (*)(pybind11::module_&);

// Adds `bind` under `op` to the binders the module calls; returns true (for a static initialiser).
bool register_binding(const char* op, Binder bind);

// An address from Python (torch .data_ptr(), already checked by facesal_fast/ops/) as a pointer.
template <typename T>
T* ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

}  // namespace facesal
