"""Evaluation: metrics, calibration fitting, operating points, reports and plots."""
