"""Weights-free definitions of standard networks, for the model spec's `factory:` (for example
`factory: "edgekd.nets.efficientnet_lite:efficientnet_lite0"` with a published state dict as `weights:`).
"""
