"""fastnn: fully-connected neural networks on the CPU, with compiled Cython/OpenMP kernels."""
from ._version import __version__

from ._config import (config, get_engine, get_kernel_variant, get_num_threads, set_engine,
                      set_kernel_variant, set_num_threads, show_config,
                      supported_kernel_variants)
from .ops import (activation_backward, activation_forward, gemm, linear_backward,
                  linear_forward)
from .nn import (Add, Concat, Graph, Identity, LeakyReLU, Linear, Maximum, Module, Multiply,
                 Parameter, ReLU, Sequential, Sigmoid, Split, Tanh, GELU, SiLU, Softplus, ELU,
                 Softmax, LogSoftmax)
from .nn import BatchNorm1d, Dropout, LayerNorm, manual_seed
from .nn.utils import clip_grad_norm_, clip_grad_value_
from . import init
from .losses import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, L1Loss, Loss,
                     MSELoss, NLLLoss, SmoothL1Loss, SVMLoss)
from .optim import SGD, Adam, AdamW, RMSprop
from .gradcheck import GradcheckError, GradcheckReport, gradcheck, numerical_gradient
from .io import Checkpoint, load, load_checkpoint, save, save_checkpoint
from .training import (Callback, CompiledStep, EarlyStopping, History, LRSchedulerCallback,
                       Trainer, compile_step)
from .inference import InferenceFunction, compile_inference

__all__ = [
    "__version__", "config", "show_config", "get_engine", "set_engine", "get_num_threads",
    "set_num_threads", "get_kernel_variant", "set_kernel_variant", "supported_kernel_variants",
    "gemm", "linear_forward", "linear_backward", "activation_forward", "activation_backward",
    "Parameter", "Module", "Linear", "Sigmoid", "ReLU", "Tanh", "LeakyReLU", "Identity",
    "GELU", "SiLU", "Softplus", "ELU", "Softmax", "LogSoftmax",
    "Sequential", "Graph", "Add", "Multiply", "Maximum", "Concat", "Split",
    "LayerNorm", "BatchNorm1d",
    "clip_grad_norm_", "clip_grad_value_", "init",
    "Loss", "MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss", "BCELoss", "BCEWithLogitsLoss",
    "CrossEntropyLoss", "NLLLoss", "SVMLoss", "SGD", "Adam", "AdamW", "RMSprop",
    "gradcheck",
    "numerical_gradient", "GradcheckError", "GradcheckReport", "save", "load",
    "save_checkpoint", "load_checkpoint", "Checkpoint",
    "compile_step", "CompiledStep", "Trainer", "History", "Callback", "EarlyStopping",
    "LRSchedulerCallback", "compile_inference", "InferenceFunction", "Dropout", "manual_seed",
]
