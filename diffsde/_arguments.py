"""Argument types of the ``diffsde`` command: each parses one option's text or says, in one line,
what was expected (argparse adds the option's name)."""

from __future__ import annotations

import argparse
import math
import os
from typing import Callable

import torch

from .studies import resolve_method

__all__ = ["Parser", "int_between", "positive_float", "ou_time", "device", "method", "SEED_MAX", "CPU_COUNT"]

# Seeds go to torch.Generator.manual_seed (at most 2^64 - 1) as seed + offset, one offset per random
# stream (the studies use offsets up to about 2e6): 2^63 - 1 leaves room for all of them.
SEED_MAX = 2 ** 63 - 1
CPU_COUNT = os.cpu_count() or 1


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is ONE line on stderr (no usage block) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def int_between(minimum: int, maximum: int | None = None, maximum_is: str = "") -> Callable[[str], int]:
    """A parser of integers in [minimum, maximum] (no upper bound when ``maximum`` is None);
    ``maximum_is`` names the bound in messages (e.g. "this machine's CPU count")."""
    if maximum is None:
        expected = f"an integer >= {minimum}"
    else:
        bound = "2^63 - 1" if maximum == SEED_MAX else str(maximum)
        expected = f"an integer from {minimum} to {bound}" + (f" ({maximum_is})" if maximum_is else "")

    def parse(text: str) -> int:
        shown = text if len(text) <= 40 else text[:37] + "..."
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {shown!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {shown}")
        return value
    return parse


def _finite_float(what: str, allow_zero: bool) -> Callable[[str], float]:
    """A parser of finite floats > 0 (or >= 0 with ``allow_zero``); messages name ``what``."""
    bound = ">= 0" if allow_zero else "> 0"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} {bound}, got {text!r}") from None
        if not (0 <= value if allow_zero else 0 < value) or not value < math.inf:
            raise argparse.ArgumentTypeError(f"expected a finite {what.split(' ', 1)[-1]} {bound}, got {text!r}")
        return value
    return parse


positive_float = _finite_float("a number", allow_zero=False)
ou_time = _finite_float("an OU time", allow_zero=True)


def device(text: str) -> torch.device:
    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available on this machine")
    elif parsed.type != "cpu":
        raise argparse.ArgumentTypeError(f"device must be cpu, cuda[:k] or mps, got {text!r}")
    return parsed


def method(text: str) -> str:
    try:
        resolve_method(text)
    except (ValueError, TypeError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text
