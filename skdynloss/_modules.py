"""The torch modules behind ``module="mlp"``, ``module="cnn"`` and ``module="cnn1d"``.

Each maps a batch of rows of X, exactly as the user passed them, to logits: no scaling
hides inside, so ``clf.module_(torch.as_tensor(X))`` is what ``predict_proba`` applies
a softmax to. None holds a buffer or updates state in its forward pass (no batch
normalisation), so that ``torch.func.stack_module_state`` and ``torch.func.vmap`` can
train several copies as one. Each also says how many multiply-adds one row's forward
pass costs (``macs_per_row``), from which the classifier chooses its threads.
"""

import copy
import math

import torch
from torch import nn


def _dense_stack(n_in, hidden_layer_sizes, n_out):
    layers = []
    for width in hidden_layer_sizes:
        layers += [nn.Linear(n_in, width), nn.ReLU()]
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return layers


class MLP(nn.Sequential):
    """Fully connected ReLU network ``n_features -> hidden... -> n_classes``.

    Parameters
    ----------
    n_features : int
        Number of input features.
    n_classes : int
        Number of outputs (logits).
    hidden_layer_sizes : tuple of int, default=(100,)
        Width of each hidden layer; ``()`` gives a linear softmax model.
    """

    def __init__(self, n_features, n_classes, hidden_layer_sizes=(100,)):
        super().__init__(*_dense_stack(n_features, hidden_layer_sizes, n_classes))

    @staticmethod
    def n_parameters(n_features, n_classes, hidden_layer_sizes=(100,)):
        """Number of parameters, computed without building the network."""
        return _dense_parameters(n_features, hidden_layer_sizes, n_classes)

    def macs_per_row(self):
        """Multiply-adds of one row's forward pass."""
        return sum(m.in_features * m.out_features for m in _linears(self))


class CNN(nn.Module):
    """A small convolutional network for images given as flat rows.

    Two 3x3 convolution blocks (16 and 32 channels, ReLU; the first followed by 2x2
    max-pooling when the image is at least 4 pixels high and wide) and a dense ReLU head.
    Each row of X is reshaped to ``image_shape`` before the convolutions.

    Parameters
    ----------
    image_shape : tuple of int
        ``(channels, height, width)``, or ``(height, width)`` for one channel.
    n_classes : int
        Number of outputs (logits).
    hidden_layer_sizes : tuple of int, default=(100,)
        Widths of the dense head.
    """

    def __init__(self, image_shape, n_classes, hidden_layer_sizes=(100,)):
        super().__init__()
        if len(image_shape) == 2:
            image_shape = (1, *image_shape)
        self.image_shape = tuple(int(s) for s in image_shape)
        channels, height, width = self.image_shape
        pool = min(height, width) >= 4
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2) if pool else nn.Identity(),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        n_flat = (
            32 * (height // 2 if pool else height) * (width // 2 if pool else width)
        )
        self.head = nn.Sequential(*_dense_stack(n_flat, hidden_layer_sizes, n_classes))

    def forward(self, x):
        return self.head(self.features(x.reshape(x.shape[0], *self.image_shape)))

    @staticmethod
    def n_parameters(image_shape, n_classes, hidden_layer_sizes=(100,)):
        """Number of parameters, computed without building the network."""
        if len(image_shape) == 2:
            image_shape = (1, *image_shape)
        channels, height, width = (int(s) for s in image_shape)
        pool = min(height, width) >= 4
        n_flat = (
            32 * (height // 2 if pool else height) * (width // 2 if pool else width)
        )
        conv = (channels * 9 + 1) * 16 + (16 * 9 + 1) * 32
        return conv + _dense_parameters(n_flat, hidden_layer_sizes, n_classes)

    @staticmethod
    def macs(image_shape, n_classes, hidden_layer_sizes=(100,)):
        """Multiply-adds of one row's forward pass, computed without building it."""
        if len(image_shape) == 2:
            image_shape = (1, *image_shape)
        channels, height, width = (int(s) for s in image_shape)
        pool = min(height, width) >= 4
        pooled = (height // 2) * (width // 2) if pool else height * width
        conv = 16 * channels * 9 * height * width + 32 * 16 * 9 * pooled
        widths = (32 * pooled, *hidden_layer_sizes, n_classes)
        return conv + sum(a * b for a, b in zip(widths, widths[1:], strict=False))

    def macs_per_row(self):
        """Multiply-adds of one row's forward pass."""
        hidden = [m.out_features for m in _linears(self.head)][:-1]
        n_classes = _linears(self.head)[-1].out_features
        return self.macs(self.image_shape, n_classes, hidden)


class CNN1D(nn.Module):
    """A small 1-D convolutional network for signals given as rows.

    Each row of X holds ``channels`` signals of ``n_features / channels`` samples
    each, channel after channel (one signal per row by default). Two convolution
    blocks (kernel 5, 16 and 32 channels, ReLU, each followed by max-pooling by 2
    while the signal is at least 4 samples long), an average over at most 8 equal
    stretches of the signal, and a dense ReLU head. Plain convolution, pooling,
    ReLU and linear layers: no buffers, no batch normalisation.

    Parameters
    ----------
    n_features : int
        Samples per row (all channels together).
    n_classes : int
        Number of outputs (logits).
    hidden_layer_sizes : tuple of int, default=(100,)
        Widths of the dense head.
    channels : int, default=1
        Signals per row; ``n_features`` must be a multiple of it.
    """

    kernel_size = 5

    def __init__(self, n_features, n_classes, hidden_layer_sizes=(100,), channels=1):
        super().__init__()
        self.channels = int(channels)
        self.length = _signal_length(n_features, channels)
        k = self.kernel_size
        lengths = _signal_lengths(self.length)
        self.features = nn.Sequential(
            nn.Conv1d(self.channels, 16, kernel_size=k, padding=k // 2),
            nn.ReLU(),
            nn.MaxPool1d(2) if lengths[1] < lengths[0] else nn.Identity(),
            nn.Conv1d(16, 32, kernel_size=k, padding=k // 2),
            nn.ReLU(),
            nn.MaxPool1d(2) if lengths[2] < lengths[1] else nn.Identity(),
            nn.AdaptiveAvgPool1d(lengths[3]),
            nn.Flatten(),
        )
        self.head = nn.Sequential(
            *_dense_stack(32 * lengths[3], hidden_layer_sizes, n_classes)
        )

    def forward(self, x):
        return self.head(self.features(x.reshape(x.shape[0], self.channels, -1)))

    @classmethod
    def n_parameters(cls, n_features, n_classes, hidden_layer_sizes=(100,), channels=1):
        """Number of parameters, computed without building the network."""
        length = _signal_length(n_features, channels)
        k = cls.kernel_size
        conv = (int(channels) * k + 1) * 16 + (16 * k + 1) * 32
        n_flat = 32 * _signal_lengths(length)[3]
        return conv + _dense_parameters(n_flat, hidden_layer_sizes, n_classes)

    @classmethod
    def macs(cls, n_features, n_classes, hidden_layer_sizes=(100,), channels=1):
        """Multiply-adds of one row's forward pass, computed without building it."""
        lengths = _signal_lengths(_signal_length(n_features, channels))
        k = cls.kernel_size
        conv = 16 * int(channels) * k * lengths[0] + 32 * 16 * k * lengths[1]
        widths = (32 * lengths[3], *hidden_layer_sizes, n_classes)
        return conv + sum(a * b for a, b in zip(widths, widths[1:], strict=False))

    def macs_per_row(self):
        """Multiply-adds of one row's forward pass."""
        lengths = _signal_lengths(self.length)
        k = self.kernel_size
        conv = 16 * self.channels * k * lengths[0] + 32 * 16 * k * lengths[1]
        return conv + sum(m.in_features * m.out_features for m in _linears(self.head))


def _signal_length(n_features, channels):
    n_features, channels = int(n_features), int(channels)
    if channels < 1 or n_features % channels:
        raise ValueError(
            f"module='cnn1d' with signal_channels={channels}: the {n_features} features "
            "of each row must split into that many signals of equal length."
        )
    return n_features // channels


def _signal_lengths(length):
    """Samples per channel: at the input, after each block, and after the averaging."""
    first = length // 2 if length >= 4 else length
    second = first // 2 if first >= 4 else first
    return (length, first, second, min(8, second))


def _linears(module):
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def _dense_parameters(n_in, hidden_layer_sizes, n_out):
    total = 0
    for width in (*hidden_layer_sizes, n_out):
        total += (n_in + 1) * width
        n_in = width
    return total


def n_image_features(image_shape):
    """Number of features per row that ``image_shape`` implies."""
    return math.prod(int(s) for s in image_shape)


# ------------------------------------------------------------------ stacks of models


class StackedMLP(nn.Module):
    """K MLPs of the same widths as one module, computed class-major.

    ``forward`` maps inputs of shape (K, B, F) (model k's batch) to outputs of shape
    (K, C, B) (``class_dim = 1``). Every layer is one batched product ``W_k a_k + b_k``
    (``torch.baddbmm``), in a layout where the softmax over classes reduces over a
    non-innermost axis (measured about 40x faster than over an innermost axis of three
    classes, on the CPU).

    Its parameters are the K models' parameters stacked, in the order of each model's
    ``parameters()``, so that the stack's parameter j, row k, is model k's parameter j.
    """

    class_dim = 1

    def __init__(self, modules):
        super().__init__()
        self.stacked = nn.ParameterList(_stacked_parameters(modules))
        # A plain tuple for the forward pass: iterating a ParameterList costs a
        # string index per parameter, at every step. (.to() keeps the Parameters.)
        self._flat = tuple(self.stacked)

    @staticmethod
    def accepts(module):
        """Whether ``module`` is a plain MLP (Linear and ReLU layers only)."""
        return type(module) is MLP and all(
            isinstance(m, nn.Linear | nn.ReLU) for m in module
        )

    def forward(self, x):
        params = self._flat
        last = len(params) // 2 - 1
        x = x.transpose(1, 2)
        for depth in range(last + 1):
            weight, bias = params[2 * depth], params[2 * depth + 1]
            x = torch.baddbmm(bias.unsqueeze(2), weight, x)
            if depth < last:
                x = torch.relu(x)
        return x


class VmapStack(nn.Module):
    """K copies of any module (of the same structure) as one module, through
    ``torch.func``: the parameters stacked as by ``stack_module_state``, the forward
    pass ``vmap`` of ``functional_call`` over the K models.

    ``forward`` maps (K, B, ...) to (K, B, C) (``class_dim = -1``). Modules with
    buffers (batch-norm statistics change in place) or random operations in training
    mode (dropout: a stack cannot draw what K separate fits draw) are refused.
    """

    class_dim = -1

    def __init__(self, modules):
        super().__init__()
        first = modules[0]
        if any(True for _ in first.buffers()):
            raise TypeError(
                f"{type(first).__name__} has buffers, which a stack cannot update "
                "for each model"
            )
        self._names = [name for name, _ in first.named_parameters()]
        self.stacked = nn.ParameterList(_stacked_parameters(modules))
        self._flat = tuple(self.stacked)
        # A stateless copy to call functionally (its own tensors are never used).
        self._base = [copy.deepcopy(first).to("meta")]

    def forward(self, x):
        base = self._base[0]
        names = self._names

        def one(params, xk):
            return torch.func.functional_call(
                base, dict(zip(names, params, strict=True)), (xk,)
            )

        return torch.vmap(one, randomness="error")(self._flat, x)


def _stacked_parameters(modules):
    """Model k's parameter j as row k of the stack's parameter j (a copy)."""
    per_model = [list(m.parameters()) for m in modules]
    if len({len(p) for p in per_model}) != 1 or any(
        a.shape != b.shape
        for params in per_model[1:]
        for a, b in zip(per_model[0], params, strict=True)
    ):
        raise TypeError("the models of a stack must have parameters of the same shapes")
    return [
        nn.Parameter(torch.stack([params[j].detach() for params in per_model]))
        for j in range(len(per_model[0]))
    ]


def stack_modules(modules):
    """One module computing K models: the batched MLP where it applies, else vmap.

    The batched MLP is kept because it is faster for the MLP: measured per model and
    step (forward, cross-entropy, backward; float64, one thread, CPU time), 325 us
    against vmap's 590 us for 8 networks 2-100-3 on 300 rows, and 108 us against
    211 us for 16 networks 64-100-10 on batches of 64. For the package's CNN, vmap
    (grouped convolutions) is the fastest form measured: a stack of 16 CNNs on the 8x8
    digits (Adam, batches of 64) cost 0.13 s per model and epoch pair against 0.16 s
    with one explicit grouped convolution per layer and 0.21 s with im2col and batched
    products; a fit alone costs 0.17 s.
    """
    if all(StackedMLP.accepts(m) for m in modules):
        return StackedMLP(modules)
    return VmapStack(modules)
