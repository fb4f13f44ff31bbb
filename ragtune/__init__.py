"""ragtune: decide between retrieval and fine-tuning with measurements, and serve the hybrid."""

__version__ = "0.1.0"
