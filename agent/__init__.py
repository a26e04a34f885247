"""hatang-agent. Kept import-free so that ``import agent.report`` stays cheap."""

__version__ = "0.1.0"
