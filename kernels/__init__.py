"""Triton kernels and their launchers; ships in the wheel as `eor.kernels`.

Submodules import triton, so they are imported only when a kernel runs
(`eor.ops.backend.load_kernels`):

- `ensemble_linear`: `_ensemble_linear_fwd_kernel`, `_ensemble_linear_bwd_dx_kernel`,
  `_ensemble_linear_bwd_dw_kernel`, launchers `ensemble_linear_fwd` / `ensemble_linear_bwd`.
- `ensemble_mlp`: `_ensemble_mlp_fwd_kernel` (fused whole-MLP forward: full, min over
  members, gathered rows, fused log-variance bounding), launchers `ensemble_mlp_fwd`,
  `gaussian_ensemble_fwd`.
"""
