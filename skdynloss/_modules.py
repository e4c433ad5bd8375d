"""The torch modules behind ``module="mlp"`` and ``module="cnn"``.

Each maps a batch of rows of X, exactly as the user passed them, to logits: no scaling
hides inside, so ``clf.module_(torch.as_tensor(X))`` is what ``predict_proba`` applies
a softmax to.
"""

import math

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


def _dense_parameters(n_in, hidden_layer_sizes, n_out):
    total = 0
    for width in (*hidden_layer_sizes, n_out):
        total += (n_in + 1) * width
        n_in = width
    return total


def n_image_features(image_shape):
    """Number of features per row that ``image_shape`` implies."""
    return math.prod(int(s) for s in image_shape)
