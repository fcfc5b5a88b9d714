"""Triton kernels and their launchers; ships in the wheel as `eor.kernels`."""
