"""Data: one loader interface for every layout, dataset checks, duplicates and grouped splits."""
