"""dermalens: skin-lesion classification for clinical decision support (never a diagnosis)."""

__version__ = "0.1.0"
