"""The size of torch.func.hessian's wrong gain x W1 block over seeds.

For each seed of normref.testing.second_order's networks with batch norm and
layer norm with a weight (with and without a bias), prints the largest error of the block
d2L/(d gamma d W1) relative to the largest Hessian entry, the largest error
of every other entry, and the same for jacrev(grad) (a correct method), so the
figures quoted in normref/testing/known/second_order.json can be re-measured:

    python benchmarks/second_order_seeds.py [n_seeds]
"""
import sys

import numpy as np

from normref.testing import second_order as so


def block_errors(net, H, A):
    """(max error in the gamma x W1 block, max error elsewhere), relative to max|H|."""
    sl = net.slices()
    E = np.abs(A - H) / np.abs(H).max()
    blk = float(E[sl["gamma"], sl["W1"]].max())
    E[sl["gamma"], sl["W1"]] = 0.0
    return blk, float(E.max())


def main(n_seeds=6):
    cands = so.torch_candidates()
    print("network               func.hessian block  elsewhere  jacrev(grad) block  elsewhere")
    for name in ("batch_norm", "layer_norm"):
        for affine, seed in [(a, s) for a in (True, "weight") for s in range(n_seeds)]:
            net = so.network(name, affine, seed)
            H = so.oracle_hessian(net)
            bad = block_errors(net, H, np.asarray(cands["torch.func.hessian"][1](net)))
            good = block_errors(net, H, np.asarray(cands["torch.func.jacrev(grad)"][1](net)))
            print(f"{net.label:<22}{bad[0]:>18.3g}{bad[1]:>11.2g}{good[0]:>20.2g}{good[1]:>11.2g}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6)
