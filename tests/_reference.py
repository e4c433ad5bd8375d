"""Answers written out independently of the package, shared by the tests."""

import numpy as np
import torch
import torch.nn.functional as F


def by_hand(t, C, A, T):
    """The class weights of DESIGN.md section 1, written out independently."""
    tau = t % T
    c = int(t // T) % C
    w = 1 + 2 * (A - 1) * tau / T if tau < T / 2 else 2 * A - 1 - 2 * (A - 1) * tau / T
    gamma = np.full(C, C / (w + C - 1))
    gamma[c] = C * w / (w + C - 1)
    return gamma


def cross_entropy(outputs, y):
    return F.cross_entropy(outputs, y, reduction="none")


def dense_top_eigenvalue(module, X, y, gamma=None, per_sample=cross_entropy):
    """Largest eigenvalue of the dense Hessian of the (Gamma-weighted) mean of
    ``per_sample`` losses, in float64 (torch.func.hessian and eigvalsh)."""
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach() for p in module.parameters()]
    sizes = [p.numel() for p in params]
    flat = torch.cat([p.reshape(-1) for p in params])
    Xt = torch.tensor(X, dtype=torch.float64)
    yt = torch.tensor(y)

    def loss(theta):
        chunks = torch.split(theta, sizes)
        state = {
            n: c.reshape(p.shape) for n, c, p in zip(names, chunks, params, strict=True)
        }
        losses = per_sample(torch.func.functional_call(module, state, (Xt,)), yt)
        if gamma is None:
            return losses.mean()
        return (torch.as_tensor(gamma, dtype=torch.float64)[yt] * losses).mean()

    return torch.linalg.eigvalsh(torch.func.hessian(loss)(flat))[-1].item()
