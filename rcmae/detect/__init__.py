"""The anomaly detector: per-machine Gaussians, centroids and ID log-probabilities, fitted on train-normal
clips and applied to new ones, with per-machine decision thresholds."""
