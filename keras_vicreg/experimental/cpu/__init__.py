"""Kernels that only pay on a small CPU with TensorFlow: opt-in, on in the demo config only."""
