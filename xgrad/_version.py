"""The version of xgrad, in one place below every module that states it."""

__version__ = "0.2.0"
