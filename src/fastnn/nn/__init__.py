"""fastnn's module layer: Parameter, Module, the layers, the gates and the containers.

    parameter.py   Parameter and its lazy-zero protocol
    module.py      Module (the PyTorch-like API), Ctx (per-use saved state), buffer reuse
    layers.py      Linear, Sigmoid, ReLU, Tanh, LeakyReLU, Identity, GELU, SiLU, Softplus, ELU,
                   Softmax, LogSoftmax, Dropout (+ manual_seed)
    gates.py       Add, Multiply, Maximum, Concat, Split
    norm.py        LayerNorm, BatchNorm1d
    plan.py        the one planner: step kinds, the fusion rule, chain and graph plans
    sequential.py  Sequential
    graph.py       Graph, Node
    utils.py       clip_grad_norm_, clip_grad_value_ (gradient clipping, torch.nn.utils')
"""
from .parameter import Parameter
from .module import Module
from .layers import (ELU, GELU, Dropout, Identity, LeakyReLU, Linear, LogSoftmax, ReLU,
                     Sigmoid, SiLU, Softmax, Softplus, Tanh, manual_seed)
from .gates import Add, Concat, Maximum, Multiply, Split
from .norm import BatchNorm1d, LayerNorm
from .sequential import Sequential
from .graph import Graph, Node

__all__ = ["Parameter", "Module", "Linear", "Sigmoid", "ReLU", "Tanh", "LeakyReLU",
           "Identity", "Sequential", "Graph", "Node", "Add", "Multiply", "Maximum", "Concat",
           "Split", "LayerNorm", "BatchNorm1d", "GELU", "SiLU", "Softplus", "ELU",
           "Softmax", "LogSoftmax", "Dropout", "manual_seed"]
