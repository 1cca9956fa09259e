"""The data wing: the dataset contract, published downloads, augmentation and concept probes."""
