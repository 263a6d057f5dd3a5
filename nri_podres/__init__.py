"""nri-podres: pod-level CPU and memory management as an NRI plugin."""

__version__ = "0.1.0"
