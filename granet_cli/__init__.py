"""granet: sparse neural-network training research from the command line."""

__version__ = "0.2.1"
