"""fastnn benchmark suite: python -m bench [--quick] [--large] [--threads 1,2]
                                        [--scenarios cs231n,tiny,mnist,adam,residual,digits,large]
                                        [--blocks N] [--json PATH] [--no-plot]

(run from the repository root; needs fastnn importable, e.g. PYTHONPATH=src)

Training steps and whole fits of small fully-connected networks, with every contender in
one process, interleaved:

  compiled  fastnn's one-call training step (fnn.compile_step); for digits fnn.Trainer
  modules   fastnn's module path: zero_grad, forward, loss, backward, SGD step; for digits
            fnn.Trainer(compiled=False)
  numpy     hand-written NumPy backprop, the twins in fastnn/_reference.py (the CS231n
            lecture's 20 lines for cs231n, NumpyMLP, NumpyAdamMLP, NumpyResidualMLP)
  torch     PyTorch autograd + torch.optim.SGD (when installed); for adam torch.optim.Adam,
            also as torch-foreach (foreach=True) and torch-fused (fused=True)
  sklearn   scikit-learn's MLPClassifier (digits only, when installed)

--scenarios sklearn (opt-in; bench/sklearn_mlp.py): fastnn.sklearn.MLPClassifier /
MLPRegressor against scikit-learn's, identical parameters, adam / sgd / lbfgs, on digits,
breast cancer, wine, diabetes, make_classification / make_regression (50,000 x 100).

Scenarios: cs231n (64x1000-100-10 sigmoid, sum of squares, no biases, SGD lr 1e-4,
float64 and float32), tiny (2-64-64-3 ReLU, softmax CE, batch 32), mnist (784-512-512-10
ReLU, softmax CE, batch 128 and 1024), adam (tiny and mnist-b128 trained with Adam lr
1e-3), residual (a fastnn.Graph: 64-128 ReLU, two
residual blocks relu(h + W2 relu(W1 h)) of width 128, 128-10; softmax CE, SGD lr 0.05
momentum 0.9, batch 64), large (4096-4096-4096-10, batch 512; only with --large) and
digits (scikit-learn's load_digits, 64-100-10 ReLU, 50 epochs of SGD with momentum,
end-to-end fit time and test accuracy), inference (only when asked for: the eval-mode
forward of 2-64-64-3 and 784-512-512-10 ReLU, float32, batch 1, 32 and 1024 -- --quick: 1
and 32 -- µs per call: fastnn.compile_inference as "compiled", onnxruntime on the
fastnn.onnx.export file with intra_op_num_threads = the thread count, torch under
torch.inference_mode and NumPy; cross-checked on the outputs, rtol 1e-5 of their scale).

Method: the same initial weights and data for every contender; a cross-check before
timing (a few steps from the same state must give the same losses, rtol 1e-5 in float64
and 1e-3 in float32; digits: test accuracies within 0.03), otherwise the scenario is
aborted; a warm-up; then blocks of steps (fits for digits), the contenders taking turns
block by block (the starting contender rotating), median of the blocks with min and max.
Each thread count gets fastnn.set_num_threads, threadpoolctl.threadpool_limits (NumPy's
and scikit-learn's BLAS) and torch.set_num_threads; a multi-threaded block starts after a
0.3 s pause so that the previous contender's pool (OpenBLAS's and torch's workers spin
~0.13 s after a call) is idle.  A block is flagged as disturbed when the process's CPU
time / wall time shows it lost CPU (below 0.9, or with several threads below 0.75 of the
contender's best block) or when the 1-minute load average before it exceeded the number of
cores.  Results: a table, bench/results/<timestamp>.json and a PNG chart of the ratios
next to it.
"""
import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np

import fastnn as fnn
from fastnn._reference import (NumpyAdamMLP, NumpyMLP, NumpyModernMLP, NumpyResidualMLP,
                               dropout_mask, two_layer_step)

FLOP_CONVENTION = (
    "GFLOP/s count the matrix products only, 2*M*N*K per product: for every Linear layer "
    "the forward x @ W.T, grad_W and grad_x -- except grad_x of the first layer, which no "
    "contender computes; activations, loss, bias and the update are not counted.")
RATIO_CONVENTION = ("ratio = contender's median time / fastnn compiled's median time in the "
                    "same run (> 1: fastnn compiled is faster)")
CONTENDERS = ("compiled", "modules", "onnxruntime", "numpy", "torch", "torch-foreach",
              "torch-fused", "sklearn")
GROUPS = ("cs231n", "tiny", "mnist", "adam", "modern", "residual", "large", "digits",
          "inference", "sklearn")
OPT_IN = ("large", "inference", "sklearn")     # not in the default --scenarios list

SETTLE_S = 0.3          # pause before each multi-threaded block
UTIL_MIN = 0.9          # CPU time / wall time below this: the main thread lost its core
OTHERS_MARGIN = 0.25    # other processes' CPU use (cores) beyond the cores we leave free


# ------------------------------------------------------------------------- helpers
def step_flops(sizes, batch, input_grad=False):
    """FLOPs of the matrix products of one training step of a fully-connected network with
    layer widths ``sizes`` (input first) on ``batch`` samples: per layer (K inputs, N
    outputs) the forward x @ W.T, grad_W = dy.T @ x and grad_x = dy @ W, each 2*M*N*K; the
    first layer's grad_x only with ``input_grad``."""
    total = 0
    for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        products = 3 if (i > 0 or input_grad) else 2
        total += products * 2 * batch * n * k
    return total


def _optional(name):
    try:
        return __import__(name)
    except ImportError:
        return None


def _loadavg():
    try:
        return list(os.getloadavg())
    except (OSError, AttributeError):
        return None


def _runnable():
    """Runnable scheduling entities right now (4th field of /proc/loadavg, our own threads
    included), or None."""
    try:
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info():
    versions = {"python": platform.python_version(), "fastnn": fnn.__version__,
                "numpy": np.__version__}
    for mod in ("torch", "sklearn", "scipy", "threadpoolctl", "matplotlib"):
        m = _optional(mod)
        versions[mod] = getattr(m, "__version__", None) if m is not None else None
    cfg = fnn.config()
    return {"cpu": cpu_model(), "cores": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else None,
            "platform": platform.platform(), "versions": versions,
            "fastnn_config": cfg, "loadavg_start": _loadavg()}


class _Threads:
    """fastnn, NumPy's BLAS (threadpoolctl) and torch on nt threads inside the block."""

    def __init__(self, nt, torch):
        self.nt, self.torch = nt, torch

    def __enter__(self):
        from threadpoolctl import threadpool_limits
        self._limits = threadpool_limits(self.nt)
        fnn.set_num_threads(self.nt)
        if self.torch is not None:
            self._torch_prev = self.torch.get_num_threads()
            self.torch.set_num_threads(self.nt)
        return self

    def __exit__(self, *exc):
        self._limits.restore_original_limits()
        fnn.set_num_threads(None)
        if self.torch is not None:
            self.torch.set_num_threads(self._torch_prev)


def _block_record():
    return {"times": [], "cpu_util": [], "others_cpu": [], "loadavg1": [], "runnable": []}


_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _system_busy():
    """CPU seconds all processes of the machine have used (/proc/stat: user, nice, system,
    irq, softirq, steal), or None."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq + steal) / _HZ


def _timed(fn, reps):
    """Run fn reps times; (seconds per call, our CPU time / wall time, other processes' CPU
    time / wall time).  The latter comes from /proc/stat (None where it is missing), which
    counts in clock ticks (10 ms): it is a lower bound, two ticks below the difference, so
    that the tick resolution cannot flag a short block."""
    b0 = _system_busy()
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(reps):
        fn()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    b1 = _system_busy()
    wall = max(wall, 1e-12)
    others = (None if b0 is None or b1 is None
              else max(0.0, (b1 - b0 - cpu - 2.0 / _HZ) / wall))
    return wall / reps, cpu / wall, others


def _flag_blocks(rec, nt, ncores):
    """Count disturbed blocks: "cpu" where our CPU time / wall time was below UTIL_MIN (the
    main thread lost its core) or other processes used more than the cores we left free
    (ncores - nt) plus OTHERS_MARGIN (they competed for our threads' cores); "load" where
    the 1-minute load average before the block exceeded the core count.  Also counted, apart: blocks whose CPU time
    exceeds the thread count by more than half a core ("over": a contender that does not
    keep to its thread limit)."""
    free = max(0, ncores - nt) + OTHERS_MARGIN
    cpu, load, anyf, over = 0, 0, 0, 0
    for u, o, la in zip(rec["cpu_util"], rec["others_cpu"], rec["loadavg1"]):
        c = u < UTIL_MIN or (o is not None and o > free)
        lo = la is not None and la > ncores
        cpu += c
        load += lo
        anyf += c or lo
        over += u > nt + 0.5
    return {"cpu": cpu, "load": load, "any": anyf, "over": over}


def _interleave(names, blocks, nt, settle_s, run_block, log_progress=None):
    """`blocks` rounds in which every contender runs one block (run_block(name) ->
    (seconds, cpu_util, others_cpu)); the first contender rotates from round to round; a settle_s pause
    before each multi-threaded block."""
    recs = {n: _block_record() for n in names}
    for b in range(blocks):
        r = b % len(names)
        for name in names[r:] + names[:r]:
            if nt > 1:
                time.sleep(settle_s)
            la = _loadavg()
            rec = recs[name]
            rec["loadavg1"].append(la[0] if la else None)
            rec["runnable"].append(_runnable())
            t, u, o = run_block(name)
            rec["times"].append(t)
            rec["cpu_util"].append(u)
            rec["others_cpu"].append(o)
    return recs


def _summary(rec, nt, ncores, flop, samples):
    """Median / min / max of the block times (µs per step, or per fit) and derived
    numbers."""
    t = rec["times"]
    med = statistics.median(t)
    out = {"median_us": med * 1e6, "min_us": min(t) * 1e6, "max_us": max(t) * 1e6,
           "samples_per_s": samples / med,
           "gflops": flop / med / 1e9,
           "blocks": len(t),
           "block_us": [x * 1e6 for x in t],
           "cpu_util": rec["cpu_util"], "others_cpu": rec["others_cpu"],
           "loadavg1": rec["loadavg1"],
           "runnable": rec["runnable"]}
    out["disturbed"] = _flag_blocks(rec, nt, ncores)
    out["disturbed_blocks"] = out["disturbed"]["any"]
    return out


class ScenarioAborted(Exception):
    pass


# ------------------------------------------------------------------- step scenarios
def _torch_step(model, loss_fn, opt, tx, ty):
    """One PyTorch training step on (tx, ty) as a callable returning the loss."""
    def step():
        opt.zero_grad()
        loss = loss_fn(model(tx), ty)
        loss.backward()
        opt.step()
        return loss.item()
    return step


class StepScenario:
    """One training step of a fully-connected network, every contender from the same
    weights and data.  ``sizes``: the widths of its Linear layers' chain (input first)."""
    kind = "step"
    numpy_twin = NumpyMLP            # the NumPy contender (cs231n: the lecture's code)

    def __init__(self, key, group, title, sizes, batch, dtype, act, loss, bias, lr, init,
                 seed, check_steps=3, momentum=0.0):
        self.key, self.group, self.title = key, group, title
        self.sizes, self.batch = tuple(sizes), batch
        self.dtype = np.dtype(dtype)
        self.act, self.loss, self.bias, self.lr, self.init = act, loss, bias, lr, init
        self.momentum = momentum
        self.seed, self.check_steps = seed, check_steps
        self.compiled = None             # step.compiled of the last compiled contender
        self.flop = step_flops(self.sizes, batch)
        self.rtol = 1e-5 if self.dtype == np.float64 else 1e-3
        self._problem = None

    def describe(self):
        return {"key": self.key, "group": self.group, "kind": self.kind, "title": self.title,
                "sizes": list(self.sizes), "batch": self.batch, "dtype": self.dtype.name,
                "activation": self.act, "loss": self.loss, "bias": self.bias, "lr": self.lr,
                "momentum": self.momentum, "init": self.init, "flop_per_step": self.flop,
                "time_unit": "µs per step"}

    def problem(self):
        """(x, y, [(W (out, in), b or None)]) -- the same for every contender."""
        if self._problem is None:
            rng = np.random.default_rng(self.seed)
            dt = self.dtype
            x = rng.standard_normal((self.batch, self.sizes[0])).astype(dt)
            if self.loss == "mse_sum":
                y = rng.standard_normal((self.batch, self.sizes[-1])).astype(dt)
            else:
                y = rng.integers(0, self.sizes[-1], self.batch).astype(np.int64)
            weights = []
            for k, n in zip(self.sizes[:-1], self.sizes[1:]):
                if self.init == "randn":       # the lecture: w = np.random.randn(in, out)
                    W = rng.standard_normal((k, n)).T
                    b = rng.standard_normal(n) if self.bias else None
                else:                          # PyTorch's / fastnn's default
                    bound = 1 / math.sqrt(k)
                    W = rng.uniform(-bound, bound, (n, k))
                    b = rng.uniform(-bound, bound, n) if self.bias else None
                weights.append((np.ascontiguousarray(W, dt),
                                None if b is None else b.astype(dt)))
            self._problem = x, y, weights
        return self._problem

    # -- contenders: each returns step() -> loss (a float)
    def fastnn_linears(self, weights):
        lins = []
        for W, b in weights:
            lin = fnn.Linear(W.shape[1], W.shape[0], bias=b is not None, dtype=self.dtype,
                             rng=0)
            lin.weight.data = W
            if b is not None:
                lin.bias.data = b
            lins.append(lin)
        return lins

    def fastnn_model(self, weights):
        layers = []
        lins = self.fastnn_linears(weights)
        for i, lin in enumerate(lins):
            layers.append(lin)
            if i < len(lins) - 1:
                layers.append(fnn.Sigmoid() if self.act == "sigmoid" else fnn.ReLU())
        return fnn.Sequential(*layers)

    def sgd(self, model):
        return fnn.SGD(model.parameters(), lr=self.lr, momentum=self.momentum)

    def fastnn_loss(self):
        return (fnn.MSELoss(reduction="sum") if self.loss == "mse_sum"
                else fnn.CrossEntropyLoss())

    def contenders(self, torch):
        x, y, weights = self.problem()
        out = {"compiled": self._compiled(x, y, weights),
               "modules": self._modules(x, y, weights),
               "numpy": self._numpy(x, y, weights)}
        if torch is not None:
            out["torch"] = self._torch(torch, x, y, weights)
        return out

    def _compiled(self, x, y, weights):
        model = self.fastnn_model(weights)
        step = fnn.compile_step(model, self.fastnn_loss(), self.sgd(model), warn=False)
        self.compiled = bool(step.compiled)
        if not step.compiled:
            raise ScenarioAborted(f"compile_step did not compile: {step.reason}")
        return lambda: step(x, y)

    def _modules(self, x, y, weights):
        model = self.fastnn_model(weights)
        loss_fn = self.fastnn_loss()
        opt = self.sgd(model)

        def step():
            model.zero_grad()
            loss = loss_fn(model(x), y)
            model.backward(loss_fn.backward(), input_grad=False)
            opt.step()
            return loss
        return step

    def _numpy(self, x, y, weights):
        if self.group == "cs231n":       # the lecture's code keeps its weights as (in, out)
            w1, w2 = weights[0][0].T.copy(), weights[1][0].T.copy()
            return lambda: two_layer_step(x, y, w1, w2, self.lr)
        net = self.numpy_twin(weights, self.lr, self.momentum)
        return lambda: net.step(x, y)

    def torch_linears(self, torch, weights):
        tdt = torch.float64 if self.dtype == np.float64 else torch.float32
        lins = []
        with torch.no_grad():
            for W, b in weights:
                lin = torch.nn.Linear(W.shape[1], W.shape[0], bias=b is not None, dtype=tdt)
                lin.weight.copy_(torch.from_numpy(W))
                if b is not None:
                    lin.bias.copy_(torch.from_numpy(b))
                lins.append(lin)
        return lins

    def torch_model(self, torch, weights):
        layers = []
        lins = self.torch_linears(torch, weights)
        for i, lin in enumerate(lins):
            layers.append(lin)
            if i < len(lins) - 1:
                layers.append(torch.nn.Sigmoid() if self.act == "sigmoid"
                              else torch.nn.ReLU())
        return torch.nn.Sequential(*layers)

    def _torch(self, torch, x, y, weights):
        model = self.torch_model(torch, weights)
        loss_fn = (torch.nn.MSELoss(reduction="sum") if self.loss == "mse_sum"
                   else torch.nn.CrossEntropyLoss())
        opt = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=self.momentum)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)

        return _torch_step(model, loss_fn, opt, tx, ty)

    # -- method
    def crosscheck(self, fns):
        """Run check_steps steps of every contender (each from the same initial state);
        the losses must agree with fastnn compiled's within rtol."""
        losses = {k: [float(f()) for _ in range(self.check_steps)] for k, f in fns.items()}
        ref = losses["compiled"]
        diff = {}
        for k, ls in losses.items():
            diff[k] = max(abs(a - r) / max(abs(r), 1e-30) for a, r in zip(ls, ref))
        bad = {k: d for k, d in diff.items() if not d <= self.rtol}
        return {"passed": not bad, "steps": self.check_steps, "rtol": self.rtol,
                "losses": losses, "max_rel_diff": diff,
                "message": None if not bad else
                ("losses disagree with fastnn compiled's after the same steps from the same "
                 "state: " + ", ".join(f"{k} max rel diff {d:.3g} > rtol {self.rtol:g}"
                                       for k, d in bad.items()))}

    def measure(self, fns, nt, blocks, block_s, settle_s, ncores):
        reps = {}
        for k, f in fns.items():                 # warm-up and calibration
            n, t0 = 0, time.perf_counter()
            while True:
                f()
                n += 1
                el = time.perf_counter() - t0
                if el >= min(0.05, block_s / 4) or el >= 0.5:
                    break
            reps[k] = max(1, round(block_s / (el / n)))
        recs = _interleave(list(fns), blocks, nt, settle_s,
                           lambda k: _timed(fns[k], reps[k]))
        res = {}
        for k, rec in recs.items():
            s = _summary(rec, nt, ncores, self.flop, self.batch)
            s["steps_per_block"] = reps[k]
            res[k] = s
        return res


class AdamScenario(StepScenario):
    """A StepScenario trained with Adam (lr 1e-3, torch's defaults); PyTorch runs as
    torch.optim.Adam in its default (single-tensor on the CPU), foreach and fused forms."""
    numpy_twin = NumpyAdamMLP

    def sgd(self, model):
        return fnn.Adam(model.parameters(), lr=self.lr)

    def contenders(self, torch):
        out = super().contenders(None)
        if torch is not None:
            x, y, weights = self.problem()
            out["torch"] = self._torch(torch, x, y, weights)
            for form in ("foreach", "fused"):
                fn = self._torch(torch, x, y, weights, **{form: True})
                if fn is not None:
                    out[f"torch-{form}"] = fn
        return out

    def _numpy(self, x, y, weights):
        net = NumpyAdamMLP(weights, self.lr)
        return lambda: net.step(x, y)

    def _torch(self, torch, x, y, weights, **form):
        model = self.torch_model(torch, weights)
        loss_fn = torch.nn.CrossEntropyLoss()
        try:
            opt = torch.optim.Adam(model.parameters(), lr=self.lr, **form)
            tx, ty = torch.from_numpy(x), torch.from_numpy(y)
            opt.zero_grad()
            loss_fn(model(tx), ty).backward()
            opt.step()                     # a form this torch cannot run on the CPU raises
        except (RuntimeError, ValueError, TypeError):
            return None
        model = self.torch_model(torch, weights)       # start again from the same state
        opt = torch.optim.Adam(model.parameters(), lr=self.lr, **form)

        return _torch_step(model, loss_fn, opt, tx, ty)


class ResidualScenario(StepScenario):
    """One training step of a residual MLP (the network of fastnn._reference's
    NumpyResidualMLP, its NumPy twin here) as a fastnn.Graph, which compiles into one call,
    and as a torch.nn.Module."""
    numpy_twin = NumpyResidualMLP

    def __init__(self, key, title, n_in, width, blocks, n_out, batch, dtype, lr, momentum,
                 seed):
        self.blocks, self.width = blocks, width
        # the Linear layers in order: stem, two per block, head (every one but the stem
        # also computes grad_x, as in a chain: step_flops counts it right)
        sizes = (n_in,) + (width,) * (2 * blocks + 1) + (n_out,)
        super().__init__(key, "residual", title, sizes, batch, dtype, "relu", "ce", True, lr,
                         "uniform", seed, momentum=momentum)

    def describe(self):
        d = super().describe()
        d.update({"model": "fastnn.Graph", "blocks": self.blocks, "width": self.width,
                  "architecture": f"{self.sizes[0]}-{self.width} ReLU, {self.blocks} x "
                                  f"[relu(h + Linear({self.width},{self.width}) relu(Linear("
                                  f"{self.width},{self.width}) h))], {self.width}-"
                                  f"{self.sizes[-1]}"})
        return d

    def fastnn_model(self, weights):
        lins = self.fastnn_linears(weights)
        g = fnn.Graph()
        x = g.input("x", features=self.sizes[0])
        h = g.add(fnn.ReLU(), g.add(lins[0], x))
        for i in range(1, len(lins) - 1, 2):
            r = g.add(lins[i + 1], g.add(fnn.ReLU(), g.add(lins[i], h)))
            h = g.add(fnn.ReLU(), g.add(fnn.Add(), r, h))          # the skip connection
        g.output(g.add(lins[-1], h))
        return g

    def torch_model(self, torch, weights):
        lins = self.torch_linears(torch, weights)
        relu = torch.relu

        class Residual(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lins = torch.nn.ModuleList(lins)

            def forward(self, x):
                L = self.lins
                h = relu(L[0](x))
                for i in range(1, len(L) - 1, 2):
                    h = relu(L[i + 1](relu(L[i](h))) + h)
                return L[-1](h)
        return Residual()


class ModernScenario(StepScenario):
    """One training step of a "modern MLP": blocks Linear -> LayerNorm -> GELU -> Dropout
    and a last Linear, softmax CE, AdamW (torch's defaults, lr 1e-3).  Every contender
    starts from the same weights; fastnn and its NumPy twin (NumpyModernMLP) draw the same
    Dropout masks (the counter-based bits, fixed seeds), so their losses are cross-checked
    step by step; PyTorch is timed with torch.nn.Dropout (its own RNG) and cross-checked
    with those masks injected instead."""
    numpy_twin = NumpyModernMLP

    def __init__(self, key, title, sizes, batch, dtype, lr, p, seed):
        self.p = p
        super().__init__(key, "modern", title, sizes, batch, dtype, "gelu", "ce", True, lr,
                         "uniform", seed)
        self.drop_seeds = [1000 + seed * 10 + i for i in range(len(sizes) - 2)]

    def describe(self):
        d = super().describe()
        d.update({"dropout": self.p, "norm": "LayerNorm", "optimizer": "AdamW",
                  "architecture": " -> ".join(
                      [f"[Linear({a},{b}) LayerNorm GELU Dropout({self.p})]"
                       for a, b in zip(self.sizes[:-2], self.sizes[1:-1])] +
                      [f"Linear({self.sizes[-2]},{self.sizes[-1]})"])})
        return d

    def _norms(self):
        dt = self.dtype
        return [(np.ones(n, dt), np.zeros(n, dt)) for n in self.sizes[1:-1]]

    def fastnn_model(self, weights):
        lins = self.fastnn_linears(weights)
        layers = []
        for i, lin in enumerate(lins[:-1]):
            layers += [lin, fnn.LayerNorm(lin.out_features, dtype=self.dtype), fnn.GELU(),
                       fnn.Dropout(self.p, seed=self.drop_seeds[i])]
        return fnn.Sequential(*layers, lins[-1])

    def sgd(self, model):
        return fnn.AdamW(model.parameters(), lr=self.lr)

    def _numpy(self, x, y, weights):
        net = NumpyModernMLP(weights, self._norms(), self.drop_seeds, self.p, self.lr)
        return lambda: net.step(x, y)

    def torch_model(self, torch, weights, masks=None):
        """torch's modules; with ``masks`` (a callable (layer, step, shape) -> mask), its
        Dropouts are replaced by those fixed masks (for the cross-check)."""
        lins = self.torch_linears(torch, weights)
        tdt = lins[0].weight.dtype
        scenario = self

        class Masked(torch.nn.Module):
            def __init__(self, i):
                super().__init__()
                self.i, self.t = i, 0

            def forward(self, h):
                m = torch.from_numpy(masks(self.i, self.t, tuple(h.shape))).to(tdt)
                self.t += 1
                return h * m

        layers = []
        for i, lin in enumerate(lins[:-1]):
            layers += [lin, torch.nn.LayerNorm(lin.out_features, dtype=tdt), torch.nn.GELU(),
                       torch.nn.Dropout(scenario.p) if masks is None else Masked(i)]
        return torch.nn.Sequential(*layers, lins[-1])

    def _torch(self, torch, x, y, weights, masks=None, **form):
        model = self.torch_model(torch, weights, masks)
        loss_fn = torch.nn.CrossEntropyLoss()
        try:
            opt = torch.optim.AdamW(model.parameters(), lr=self.lr, **form)
        except (RuntimeError, ValueError, TypeError):
            return None
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)

        return _torch_step(model, loss_fn, opt, tx, ty)

    def contenders(self, torch):
        out = super().contenders(None)
        if torch is not None:
            x, y, weights = self.problem()
            out["torch"] = self._torch(torch, x, y, weights)
            fused = self._torch(torch, x, y, weights, fused=True)
            if fused is not None:
                try:
                    fused()        # a form this torch cannot run on the CPU raises here
                    out["torch-fused"] = self._torch(torch, x, y, weights, fused=True)
                except (RuntimeError, ValueError, TypeError):
                    pass
        return out

    def crosscheck(self, fns):
        torch = _optional("torch") if any(k.startswith("torch") for k in fns) else None
        if torch is None:
            return super().crosscheck(fns)
        x, y, weights = self.problem()
        seeds, p = self.drop_seeds, self.p
        masked = self._torch(torch, x, y, weights,
                             masks=lambda i, t, shape: dropout_mask(shape, seeds[i], t, p))
        checked = {k: f for k, f in fns.items() if not k.startswith("torch")}
        checked["torch (fastnn's masks)"] = masked
        res = super().crosscheck(checked)
        # the timed torch steps start from the state the check left (as every contender)
        for k in fns:
            if k.startswith("torch"):
                for _ in range(self.check_steps):
                    fns[k]()
        return res


# ---------------------------------------------------------------------- digits (fit)
class DigitsScenario:
    """End-to-end fit on scikit-learn's digits: time and test accuracy."""
    kind = "fit"
    group = key = "digits"

    def __init__(self, epochs, batch=64, hidden=100, lr=0.1, momentum=0.9,
                 acc_tol=0.03, dtype=np.float32):
        self.epochs, self.batch, self.hidden = epochs, batch, hidden
        self.lr, self.momentum, self.acc_tol = lr, momentum, acc_tol
        self.dtype = np.dtype(dtype)
        self.title = (f"digits 64-{hidden}-10 ReLU, softmax CE, SGD lr {lr} momentum "
                      f"{momentum}, batch {batch}, {epochs} epochs, {self.dtype.name}: "
                      "end-to-end fit")
        self._data = None

    def data(self):
        if self._data is None:
            from sklearn.datasets import load_digits
            from sklearn.model_selection import train_test_split
            X, y = load_digits(return_X_y=True)
            Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=0.2,
                                                  random_state=0, stratify=y)
            self._data = (np.ascontiguousarray(Xtr, self.dtype), ytr.astype(np.int64),
                          np.ascontiguousarray(Xte, self.dtype), yte.astype(np.int64))
        return self._data

    @property
    def sizes(self):
        return (64, self.hidden, 10)

    def describe(self):
        Xtr, _, Xte, _ = self.data()
        return {"key": self.key, "group": self.group, "kind": self.kind, "title": self.title,
                "sizes": list(self.sizes), "batch": self.batch, "dtype": self.dtype.name,
                "epochs": self.epochs, "lr": self.lr, "momentum": self.momentum,
                "n_train": len(Xtr), "n_test": len(Xte),
                "steps_per_fit": self.epochs * -(-len(Xtr) // self.batch),
                "flop_per_fit": self.flop, "time_unit": "µs per fit",
                "notes": "fastnn, NumPy and torch start from the same weights and see the "
                         "same minibatches (fastnn's Trainer shuffle); scikit-learn uses its "
                         "own initialisation and shuffling."}

    @property
    def flop(self):
        return step_flops(self.sizes, 1) * len(self.data()[0]) * self.epochs

    def _model(self):
        rng = np.random.default_rng(0)
        return fnn.Sequential(fnn.Linear(64, self.hidden, dtype=self.dtype, rng=rng),
                              fnn.ReLU(),
                              fnn.Linear(self.hidden, 10, dtype=self.dtype, rng=rng))

    def contenders(self, torch):
        """{name: prepare()}; prepare() -> (fit(), accuracy()) from a fresh initial state
        (only fit() is timed)."""
        Xtr, ytr, Xte, yte = self.data()
        out = {}

        def trainer(compiled):
            def prepare():
                m = self._model()
                tr = fnn.Trainer(m, fnn.CrossEntropyLoss(),
                                 fnn.SGD(m.parameters(), lr=self.lr, momentum=self.momentum),
                                 batch_size=self.batch, epochs=self.epochs, progress=False,
                                 compiled=compiled)
                return (lambda: tr.fit(Xtr, ytr),
                        lambda: tr.evaluate(Xte, yte)["accuracy"])
            return prepare
        out["compiled"] = trainer(True)
        out["modules"] = trainer(False)

        def numpy_prepare():
            ref = NumpyMLP.from_model(self._model(), self.lr, self.momentum)
            return (lambda: ref.fit(Xtr, ytr, self.batch, self.epochs, seed=0),
                    lambda: ref.accuracy(Xte, yte))
        out["numpy"] = numpy_prepare
        if torch is not None:
            out["torch"] = lambda: self._torch_prepare(torch)
        if _optional("sklearn") is not None:
            out["sklearn"] = self._sklearn_prepare
        return out

    def _torch_prepare(self, torch):
        from fastnn._kernels.step import shuffle
        Xtr, ytr, Xte, yte = self.data()
        m = self._model()
        lins = [l for l in m if isinstance(l, fnn.Linear)]
        tdt = torch.float64 if self.dtype == np.float64 else torch.float32
        layers = []
        with torch.no_grad():
            for i, lin in enumerate(lins):
                t = torch.nn.Linear(lin.in_features, lin.out_features, dtype=tdt)
                t.weight.copy_(torch.from_numpy(lin.weight.data))
                t.bias.copy_(torch.from_numpy(lin.bias.data))
                layers.append(t)
                if i < len(lins) - 1:
                    layers.append(torch.nn.ReLU())
        model = torch.nn.Sequential(*layers)
        opt = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=self.momentum,
                              nesterov=False)
        loss_fn = torch.nn.CrossEntropyLoss()
        tX, tY = torch.from_numpy(Xtr), torch.from_numpy(ytr)
        n, bs, epochs = len(Xtr), self.batch, self.epochs

        def fit():
            perm = np.empty(n, np.int64)
            tperm = torch.from_numpy(perm)
            for e in range(epochs):
                shuffle(perm, 0, e)                 # the Trainer's minibatch order
                for s in range(0, n, bs):
                    idx = tperm[s:s + bs]
                    opt.zero_grad()
                    loss = loss_fn(model(tX[idx]), tY[idx])
                    loss.backward()
                    opt.step()

        def accuracy():
            with torch.no_grad():
                return float((model(torch.from_numpy(Xte)).argmax(1).numpy() == yte).mean())
        return fit, accuracy

    def _sklearn_prepare(self):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier
        Xtr, ytr, Xte, yte = self.data()
        clf = MLPClassifier(hidden_layer_sizes=(self.hidden,), activation="relu",
                            solver="sgd", batch_size=self.batch, max_iter=self.epochs,
                            learning_rate="constant", learning_rate_init=self.lr,
                            momentum=self.momentum, nesterovs_momentum=False, alpha=0.0,
                            n_iter_no_change=max(self.epochs, 1), tol=0.0, shuffle=True,
                            random_state=0)

        def fit():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(Xtr, ytr)
        return fit, lambda: float(clf.score(Xte, yte))

    # -- method
    def crosscheck(self, preps):
        acc = {}
        for k, prep in preps.items():
            fit, accuracy = prep()
            fit()                                   # also the warm-up
            acc[k] = accuracy()
        ref = acc["compiled"]
        diff = {k: abs(a - ref) for k, a in acc.items()}
        bad = {k: d for k, d in diff.items() if not d <= self.acc_tol}
        return {"passed": not bad, "tol": self.acc_tol, "test_accuracy": acc,
                "abs_diff": diff,
                "message": None if not bad else
                ("test accuracies differ from fastnn compiled's "
                 f"({ref:.4f}): " + ", ".join(f"{k} {acc[k]:.4f}" for k in bad)
                 + f" (tolerance {self.acc_tol})")}

    def measure(self, preps, nt, blocks, block_s, settle_s, ncores):
        accs = {k: [] for k in preps}

        def run_block(k):
            fit, accuracy = preps[k]()              # fresh state, untimed
            if nt > 1:
                time.sleep(settle_s)                 # construction may have woken a pool
            r = _timed(fit, 1)
            accs[k].append(accuracy())
            return r
        recs = _interleave(list(preps), blocks, nt, 0.0, run_block)
        Xtr = self.data()[0]
        steps = self.epochs * -(-len(Xtr) // self.batch)
        res = {}
        for k, rec in recs.items():
            s = _summary(rec, nt, ncores, self.flop, len(Xtr) * self.epochs)
            s["us_per_step"] = s["median_us"] / steps
            s["test_accuracy"] = statistics.median(accs[k])
            res[k] = s
        return res


# --------------------------------------------------------------- inference scenarios
class InferenceScenario(StepScenario):
    """The eval-mode forward of a StepScenario's network (µs per call): fastnn's
    compile_inference ("compiled"), onnxruntime on the exported file, torch under
    inference_mode, NumPy.  The cross-check compares the outputs."""
    kind = "inference"

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        f, n = 0, self.batch
        for k, m in zip(self.sizes[:-1], self.sizes[1:]):
            f += 2 * n * m * k
        self.flop = f
        self.check_steps = 1
        self.rtol = 1e-5           # outputs, relative to their scale (float32)

    def describe(self):
        d = super().describe()
        for k in ("loss", "lr", "momentum", "flop_per_step"):
            d.pop(k, None)
        d.update(flop_per_call=self.flop, time_unit="µs per call")
        return d

    def contenders(self, torch):
        x, _, weights = self.problem()
        model = self.fastnn_model(weights).eval()
        f = fnn.compile_inference(model, batch_size=self.batch)
        self.compiled = bool(f.compiled)
        if not f.compiled:
            raise ScenarioAborted(f"compile_inference did not compile: {f.reason}")
        out = {"compiled": lambda: f(x)}
        ort = _optional("onnxruntime")
        if ort is not None and _optional("onnx") is not None:
            import tempfile
            import fastnn.onnx
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "model.onnx")
                fastnn.onnx.export(model, path)
                so = ort.SessionOptions()
                so.intra_op_num_threads = fnn.get_num_threads()
                so.inter_op_num_threads = 1
                sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            feed = {"input": x}
            out["onnxruntime"] = lambda: sess.run(None, feed)[0]
        lay = [(W, b) for W, b in weights]

        def numpy_forward():
            h = x
            for i, (W, b) in enumerate(lay):
                h = h @ W.T
                h += b
                if i < len(lay) - 1:
                    np.maximum(h, 0, out=h)
            return h
        out["numpy"] = numpy_forward
        if torch is not None:
            tm = self.torch_model(torch, weights).eval()
            tx = torch.from_numpy(x)

            def torch_forward():
                with torch.inference_mode():
                    return tm(tx)
            out["torch"] = torch_forward
        return out

    def crosscheck(self, fns):
        outs = {k: np.asarray(f(), dtype=np.float64).copy() for k, f in fns.items()}
        ref = outs["compiled"]
        scale = max(float(np.abs(ref).max()), 1e-30)
        diff = {k: float(np.abs(o - ref).max()) / scale for k, o in outs.items()}
        bad = {k: d for k, d in diff.items() if not d <= self.rtol}
        return {"passed": not bad, "steps": 1, "rtol": self.rtol, "max_rel_diff": diff,
                "losses": {k: [float(o.sum())] for k, o in outs.items()},
                "message": None if not bad else
                ("outputs disagree with fastnn compiled's: " + ", ".join(
                    f"{k} max rel diff {d:.3g} > rtol {self.rtol:g}" for k, d in bad.items()))}


# -------------------------------------------------------------------------- the suite
def build_scenarios(groups, quick, large):
    out = []
    for dt in ("float64", "float32"):
        if "cs231n" in groups:
            out.append(StepScenario(
                f"cs231n-{dt}", "cs231n",
                f"CS231n 64x1000-100-10 sigmoid, sum of squares, no bias, SGD lr 1e-4, {dt}",
                (1000, 100, 10), 64, dt, "sigmoid", "mse_sum", False, 1e-4, "randn", 0))
    if "tiny" in groups:
        out.append(StepScenario("tiny", "tiny",
                                "2-64-64-3 ReLU, softmax CE, batch 32, SGD lr 1e-2, float32",
                                (2, 64, 64, 3), 32, "float32", "relu", "ce", True, 1e-2,
                                "uniform", 1))
    if "mnist" in groups:
        for batch in (128,) if quick else (128, 1024):
            out.append(StepScenario(
                f"mnist-b{batch}", "mnist",
                f"784-512-512-10 ReLU, softmax CE, batch {batch}, SGD lr 1e-2, float32",
                (784, 512, 512, 10), batch, "float32", "relu", "ce", True, 1e-2, "uniform",
                2))
    if "adam" in groups:
        out.append(AdamScenario("adam-tiny", "adam",
                                "2-64-64-3 ReLU, softmax CE, batch 32, Adam lr 1e-3, float32",
                                (2, 64, 64, 3), 32, "float32", "relu", "ce", True, 1e-3,
                                "uniform", 5))
        out.append(AdamScenario(
            "adam-mnist-b128", "adam",
            "784-512-512-10 ReLU, softmax CE, batch 128, Adam lr 1e-3, float32",
            (784, 512, 512, 10), 128, "float32", "relu", "ce", True, 1e-3, "uniform", 6))
    if "modern" in groups:
        for batch in (128,):
            out.append(ModernScenario(
                f"modern-b{batch}",
                f"784-512-512-10 modern MLP: [Linear LayerNorm GELU Dropout(0.1)] x 2, "
                f"Linear, softmax CE, batch {batch}, AdamW lr 1e-3, float32",
                (784, 512, 512, 10), batch, "float32", 1e-3, 0.1, 9))
    if "residual" in groups:
        out.append(ResidualScenario(
            "residual", "residual MLP (fastnn.Graph) 64-128, 2 residual blocks of width 128, "
            "128-10, ReLU, softmax CE, batch 64, SGD lr 0.05 momentum 0.9, float32",
            64, 128, 2, 10, 64, "float32", 0.05, 0.9, 4))
    if "large" in groups or large:
        out.append(StepScenario(
            "large", "large",
            "4096-4096-4096-10 ReLU, softmax CE, batch 512, SGD lr 1e-2, float32",
            (4096, 4096, 4096, 10), 512, "float32", "relu", "ce", True, 1e-2, "uniform", 3,
            check_steps=2))
    if "digits" in groups:
        out.append(DigitsScenario(epochs=10 if quick else 50))
    if "inference" in groups:
        for name, sizes, seed in (("tiny", (2, 64, 64, 3), 7), ("mnist", (784, 512, 512, 10), 8)):
            for batch in (1, 32) if quick else (1, 32, 1024):
                out.append(InferenceScenario(
                    f"infer-{name}-b{batch}", "inference",
                    f"inference {'-'.join(map(str, sizes))} ReLU, batch {batch}, float32",
                    sizes, batch, "float32", "relu", "ce", True, 0.0, "uniform", seed))
    return out


def _print_header(sc, log):
    unit = {"step": "µs/step", "inference": "µs/call"}.get(sc.kind, "ms/fit")
    acc = "  test acc" if sc.kind == "fit" else ""
    log(f"  {'thr':>3} {'contender':<13}{'median ' + unit:>15}{'min':>10}{'max':>10}"
        f"{'samples/s':>11}{'GFLOP/s':>9}{'ratio':>7}{acc}  flags")


def _print_rows(sc, nt, res, log):
    scale = 1e-3 if sc.kind == "fit" else 1.0       # µs per step or call / ms per fit
    for k in CONTENDERS:
        if k not in res:
            continue
        r = res[k]
        d = r["disturbed"]
        note = (f"disturbed {d['any']}/{r['blocks']} (cpu {d['cpu']}, load {d['load']})"
                if d["any"] else "")
        if d["over"]:
            note += f" used more than {nt} thread(s) in {d['over']} block(s)"
        acc = f"{r['test_accuracy']:>10.4f}" if "test_accuracy" in r else ""
        log(f"  {nt:>3} {k:<13}{r['median_us'] * scale:>15.1f}{r['min_us'] * scale:>10.1f}"
            f"{r['max_us'] * scale:>10.1f}{r['samples_per_s']:>11.4g}{r['gflops']:>9.2f}"
            f"{r['ratio']:>7.2f}{acc}  {note}")


def run_suite(groups, threads, quick=False, large=False, blocks=None, log=print,
              settle_s=SETTLE_S):
    """Run the scenarios; returns the result document (a dict, see the JSON)."""
    torch = _optional("torch")
    ncores = os.cpu_count() or 1
    blocks = blocks or (3 if quick else 7)
    block_s = 0.05 if quick else 0.2
    doc = {"schema": 1, "created": datetime.datetime.now().isoformat(timespec="seconds"),
           "argv": sys.argv[1:], "quick": quick,
           "machine": machine_info(),
           "method": {"blocks": blocks, "block_s": block_s, "settle_s": settle_s,
                      "threads": threads, "flop_convention": FLOP_CONVENTION,
                      "ratio": RATIO_CONVENTION,
                      "disturbed": f"cpu: our CPU time / wall time < {UTIL_MIN}, or other "
                                   "processes' CPU time / wall time (a lower bound from /proc/stat) > "
                                   f"cores - threads + {OTHERS_MARGIN}; load: 1-min load "
                                   "average > cores before the block",
                      "contenders_missing": [n for n, m in (("torch", torch), (
                          "sklearn", _optional("sklearn"))) if m is None]},
           "scenarios": []}
    m = doc["machine"]
    log(f"fastnn {fnn.__version__} | {m['cpu']} | {ncores} cores | kernel "
        f"{m['fastnn_config']['kernel_variant']} | numpy {m['versions']['numpy']} | torch "
        f"{m['versions']['torch']} | scikit-learn {m['versions']['sklearn']} | load avg "
        f"{m['loadavg_start']}")
    log(f"median of {blocks} interleaved blocks (min - max); {RATIO_CONVENTION}.")
    log(FLOP_CONVENTION)
    if torch is None:
        log("torch is not installed: no torch contender")
    for sc in build_scenarios(groups, quick, large):
        entry = {"crosscheck": {"passed": False, "checks": []}, "results": []}
        doc["scenarios"].append(entry)
        try:
            entry.update(sc.describe())
        except ImportError as e:               # digits without scikit-learn
            entry.update({"key": sc.key, "group": sc.group, "kind": sc.kind,
                          "skipped": f"{e}"})
            log(f"\n== {sc.key}: skipped ({e})")
            continue
        flop_txt = (f"{sc.flop / 1e9:.2f} GFLOP/fit" if sc.kind == "fit" else
                    f"{sc.flop / 1e6:.2f} MFLOP/{'call' if sc.kind == 'inference' else 'step'}")
        log(f"\n== {sc.key}: {sc.title} ({flop_txt})")
        _print_header(sc, log)
        try:
            for nt in threads:
                with _Threads(nt, torch):
                    fns = sc.contenders(torch)
                    if sc.kind != "fit":
                        entry["compiled"] = sc.compiled     # else contenders() aborted
                    chk = sc.crosscheck(fns)
                    chk["threads"] = nt
                    entry["crosscheck"]["checks"].append(chk)
                    if not chk["passed"]:
                        raise ScenarioAborted(f"cross-check failed on {nt} thread(s): "
                                              f"{chk['message']}")
                    res = sc.measure(fns, nt, blocks, block_s, settle_s, ncores)
                ref = res["compiled"]["median_us"]
                for r in res.values():
                    r["ratio"] = r["median_us"] / ref
                entry["results"].append({"threads": nt, "contenders": res})
                _print_rows(sc, nt, res, log)
            entry["crosscheck"]["passed"] = True
        except ScenarioAborted as e:
            entry["aborted"] = str(e)
            entry["crosscheck"]["passed"] = False
            log(f"  ABORTED {sc.key}: {e}")
            continue
        checks = entry["crosscheck"]["checks"]
        if sc.kind != "fit":
            worst = {k: max(c["max_rel_diff"][k] for c in checks) for k in checks[0]["losses"]
                     if k != "compiled"}
            what = ("the outputs, rtol" if sc.kind == "inference" else
                    f"{sc.check_steps} steps from the same state, rtol")
            log(f"  cross-check OK ({what} {sc.rtol:g}): max rel. "
                f"{'output' if sc.kind == 'inference' else 'loss'} diff vs compiled "
                + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
        else:
            accs = checks[0]["test_accuracy"]
            log(f"  cross-check OK (test accuracies within {sc.acc_tol}): "
                + ", ".join(f"{k} {v:.4f}" for k, v in accs.items()))
    doc["machine"]["loadavg_end"] = _loadavg()
    nblocks = ndist = 0
    for e in doc["scenarios"]:
        for r in e["results"]:
            for c in r["contenders"].values():
                nblocks += c["blocks"]
                ndist += c["disturbed_blocks"]
    doc["disturbed_blocks"], doc["timed_blocks"] = ndist, nblocks
    if ndist:
        log(f"\nWARNING: {ndist} of {nblocks} timed blocks ran while other processes loaded "
            f"the CPU (load average {_loadavg()} on {ncores} cores, or the process got less "
            "CPU time than wall time); the times, and with several threads even the ratios, "
            "are not reliable.")
    doc["ok"] = all(e["crosscheck"]["passed"] or "skipped" in e for e in doc["scenarios"])
    return doc


def plot_ratios(doc, path):
    """A PNG of the ratios (contender / fastnn compiled), one panel per thread count."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    threads = doc["method"]["threads"]
    scen = [e for e in doc["scenarios"] if e.get("results")]
    if not scen:
        return None
    names = [c for c in CONTENDERS if c != "compiled"
             and any(c in r["contenders"] for e in scen for r in e["results"])]
    fig, axes = plt.subplots(1, len(threads),
                             figsize=(min(18, 2 + 1.2 * len(scen) * len(threads)), 4.2),
                             squeeze=False, sharey=True)
    width = 0.8 / max(len(names), 1)
    for ax, nt in zip(axes[0], threads):
        for j, c in enumerate(names):
            xs, ys = [], []
            for i, e in enumerate(scen):
                for r in e["results"]:
                    if r["threads"] == nt and c in r["contenders"]:
                        xs.append(i + (j - (len(names) - 1) / 2) * width)
                        ys.append(r["contenders"][c]["ratio"])
            ax.bar(xs, ys, width, label=c)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(scen)))
        ax.set_xticklabels([e["key"] for e in scen], rotation=30, ha="right")
        ax.set_title(f"{nt} thread{'s' if nt > 1 else ''}")
        ax.grid(axis="y", alpha=0.3, which="both")
    axes[0][0].set_ylabel("time / fastnn compiled (> 1: fastnn faster)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"fastnn {doc['machine']['versions']['fastnn']} on {doc['machine']['cpu']} "
                 f"({doc['created']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_json(doc, path=None, prefix=""):
    """Write doc to path, by default bench/results/<prefix><timestamp>.json; returns the
    path."""
    if path is None:
        out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
        path = os.path.join(out, time.strftime(f"{prefix}%Y%m%d-%H%M%S.json"))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, default=str)
    return path


def _parse_list(s, what, allowed=None, conv=str):
    items = [conv(t.strip()) for t in s.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"--{what}: empty list")
    if allowed is not None:
        bad = [t for t in items if t not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"--{what}: unknown {bad}; choose from "
                                             f"{','.join(allowed)}")
    return items


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench",
                                 description=__doc__[__doc__.index("Training steps"):],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="3 short blocks, no batch 1024, 10 digits epochs (< 1 min)")
    ap.add_argument("--large", action="store_true",
                    help="also 4096-4096-4096-10 batch 512 (minutes, ~1.6 GB of memory)")
    ap.add_argument("--threads", default=None,
                    help="comma list of thread counts (default 1 and all cores)")
    ap.add_argument("--scenarios", default=",".join(g for g in GROUPS if g not in OPT_IN),
                    help=f"comma list from {','.join(GROUPS)}")
    ap.add_argument("--blocks", type=int, default=None,
                    help="timed blocks per contender (default 7, --quick 3)")
    ap.add_argument("--json", default=None,
                    help="result file (default bench/results/<timestamp>.json)")
    ap.add_argument("--no-plot", action="store_true", help="no PNG chart")
    args = ap.parse_args(argv)
    try:
        groups = _parse_list(args.scenarios, "scenarios", GROUPS)
        ncpu = os.cpu_count() or 1
        threads = (_parse_list(args.threads, "threads", conv=int) if args.threads
                   else sorted({1, ncpu}))
        if any(t < 1 for t in threads):
            raise argparse.ArgumentTypeError("--threads: counts must be >= 1")
    except (argparse.ArgumentTypeError, ValueError) as e:
        ap.error(str(e))
    if args.blocks is not None and args.blocks < 1:
        ap.error("--blocks must be >= 1")

    skl = None
    if "sklearn" in groups:          # fastnn.sklearn vs scikit-learn (bench/sklearn_mlp.py)
        groups = [g for g in groups if g != "sklearn"]
        from bench import sklearn_mlp
        print("sklearn: fastnn.sklearn vs scikit-learn's MLPClassifier/MLPRegressor fits")
        skl = sklearn_mlp.run(threads, quick=args.quick, repeats=args.blocks)
    doc = (run_suite(groups, threads, quick=args.quick, large=args.large, blocks=args.blocks)
           if groups else {"scenarios": [], "ok": True, "machine": machine_info(),
                           "method": {"threads": threads}})
    if skl is not None:
        doc["sklearn"] = skl
        doc["ok"] = doc["ok"] and skl["ok"]
    doc["argv"] = list(sys.argv[1:] if argv is None else argv)
    path = write_json(doc, args.json)
    print(f"\nwrote {path}")
    if not args.no_plot:
        png = os.path.splitext(path)[0] + ".png"
        if _optional("matplotlib") is None:
            print("matplotlib is not installed: no chart (pip install matplotlib)")
        elif plot_ratios(doc, png):
            print(f"wrote {png}")
    if not doc["ok"]:
        aborted = [e["key"] for e in doc["scenarios"] if "aborted" in e]
        if doc.get("sklearn") and not doc["sklearn"]["ok"]:
            aborted.append("sklearn (test scores differ by more than 0.01)")
        print(f"FAILED: cross-check aborted {', '.join(aborted)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
