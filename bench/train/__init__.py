"""The train wing: the method contract, the shared training loop, the loss terms methods share,
and the teachers (trained, cached and loaded)."""
