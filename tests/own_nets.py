"""A user's own networks, importable as factories (`own_nets:tiny_net`) by the model-spec tests."""

from torch import nn


def tiny_net(in_features: int = 16, num_classes: int = 3, hidden: int = 8) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def not_a_module(**_):
    return "a string"
