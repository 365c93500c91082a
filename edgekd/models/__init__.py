"""Networks: the zoo by name, and models from anywhere through one spec (`edgekd.models.spec`)."""

from edgekd.models.hf import bind_data  # registers the Hugging Face folder source
from edgekd.models.spec import SOURCES, load_weights, read_state_dict, resolve
from edgekd.models.zoo import (
    MODELS,
    WEIGHTED,
    Classifier,
    WithProbabilities,
    build_model,
    count_params,
    eval_mode,
    export_graph,
    fold_batchnorm,
)

__all__ = ["MODELS", "SOURCES", "WEIGHTED", "bind_data", "Classifier", "WithProbabilities", "build_model",
           "count_params", "eval_mode", "export_graph", "fold_batchnorm", "load_weights", "read_state_dict",
           "resolve"]
