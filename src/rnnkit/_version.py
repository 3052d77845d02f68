"""rnnkit's version, in a module of its own: pyproject reads it at build time and every module
imports it from here, so nothing needs the package root (and its imports) to know the version."""

__version__ = "0.1.0"
