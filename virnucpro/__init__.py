"""virnucpro: a fast, resumable, faithful implementation of the VirNucPro viral-sequence identifier."""

__version__ = "0.1.0"
