"""Data loading: datasets, mixtures and the Lightning data module."""
