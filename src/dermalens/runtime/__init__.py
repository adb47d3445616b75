"""Runtime: engines, calibration, predictor, OOD check, heatmaps, folder streaming, ensembles."""
