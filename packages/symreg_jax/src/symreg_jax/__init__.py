"""GESR: genetic-programming symbolic regression guided by two small BERT models."""

__version__ = "0.1.0"
