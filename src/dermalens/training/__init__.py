"""Training: the run, its dataset and augmentation, weight soups, bundles from networks."""
