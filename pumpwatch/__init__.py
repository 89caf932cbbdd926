"""pumpwatch: the console command and composition root (wiring only)."""

__version__ = "0.1.0"
