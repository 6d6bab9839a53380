"""uns: a Unified Namespace context engine for pharma manufacturing."""

__version__ = "0.1.0"
