"""MISLEADER: an ensemble defense against model extraction, and the DFME attack to test it."""

__version__ = "0.1.0"
