"""The samplers' own error type."""

__all__ = ["NonFiniteSampleError"]


class NonFiniteSampleError(FloatingPointError):
    """A sampler produced NaN or infinite values; the message names the method, step and time."""
