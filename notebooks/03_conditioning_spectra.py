# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. Conditioning: Hessian and Fisher spectra with and without normalization
#
# Gradient descent is slow when the curvature of the loss differs wildly
# between directions: with step size $1/\lambda_{\max}$ the error along an
# eigenvector of the Hessian shrinks by $(1 - \lambda_i/\lambda_{\max})$ per
# step, so the slowest direction needs about $\kappa = \lambda_{\max}/\lambda_{\min}$
# steps. One classic explanation of why normalization helps is that it improves
# this **condition number**. This notebook
#
# 1. proves and measures the linear-unit result of LeCun et al. (1998): an input
#    mean $m$ in $d$ dimensions costs a factor $1 + d m^2$ in $\kappa$, and centering,
#    batch-normalizing or whitening the inputs removes it;
# 2. explains what a condition number means when the matrix is *singular* —
#    as it always is for normalized networks, because of scale invariance — and
#    how `normref.analysis.curvature.condition_number` treats the null space;
# 3. compares the Fisher (= Gauss-Newton) spectrum of a small MLP at
#    initialization with no normalization, batch norm and layer norm, built with
#    `normref.nets` and cross-checked against the library's autograd reference.

# %%
import io

import autograd
import autograd.numpy as anp
import matplotlib

matplotlib.use("Agg")  # non-interactive: figures are rendered to PNG and displayed inline
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, display

import normref
from normref.analysis import curvature as cv
from normref.nets import MLP, Activation, Linear, Norm


def show(fig):
    """Render a figure to PNG and display it (works with any kernel and backend)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    display(Image(data=buf.getvalue()))


# %% [markdown]
# ## 1. A linear unit: the cost of an input mean
#
# A linear unit $\hat y = w^\top x$ with the squared loss
# $L(w) = \frac1{2N}\sum_n (w^\top x_n - y_n)^2$ has the constant Hessian
#
# $$ H = \frac1N \sum_n x_n x_n^\top = \Sigma + m m^\top $$
#
# (biased empirical covariance $\Sigma$ and mean $m$ of the inputs). Take
# $\Sigma = I$ and the mean $m\mathbf 1$ in $d$ dimensions: $H = I + m^2 \mathbf 1\mathbf 1^\top$.
# On $\mathbf 1^\perp$ it acts as the identity, and $H\mathbf 1 = (1 + d m^2)\mathbf 1$, so
#
# $$ \text{eigenvalues } 1\ (d-1 \text{ times}),\ 1 + d m^2, \qquad \kappa(H) = 1 + d m^2 . $$
#
# A modest mean of 2 in 16 dimensions makes $\kappa = 65$. **Centering** the
# inputs leaves $H = \Sigma$, $\kappa = \kappa(\Sigma)$; **whitening** gives
# $H = I$, $\kappa = 1$. Batch norm applied to the inputs does both for a
# diagonal $\Sigma$ (it standardizes each feature).
#
# `cv.exact_moment_sample` draws inputs whose empirical mean and covariance are
# exactly the requested ones, `cv.hessian` differentiates an `autograd.numpy`
# loss twice, and `cv.condition_number` returns a report of what it computed.

# %%
def linear_unit_loss(X, y):
    N = X.shape[0]

    def loss(w):
        r = anp.dot(X, w) - y
        return 0.5 * anp.sum(r * r) / N

    return loss


rng = np.random.default_rng(0)
n, d = 256, 16
y_lin = rng.standard_normal(n)
ms = [0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0]
kappas = []
for m in ms:
    X = cv.exact_moment_sample(n, np.full(d, m), np.eye(d), seed=1)
    H = cv.hessian(linear_unit_loss(X, y_lin), rng.standard_normal(d))
    assert np.abs(H - (np.eye(d) + m * m * np.ones((d, d)))).max() <= 1e-12
    rep = cv.condition_number(H)
    assert rep.n_excluded == 0
    assert abs(rep.kappa / (1 + d * m * m) - 1) <= 1e-10
    kappas.append(rep.kappa)
    print(f"m = {m:4.2f}: kappa(H) = {rep.kappa:9.4f}   (1 + d m^2 = {1 + d * m * m:g})")

# %% [markdown]
# Centering, batch norm and whitening of the $m = 2$ inputs, and a non-diagonal
# covariance with eigenvalues from 1 to 100, where centering leaves
# $\kappa(\Sigma) = 100$ and only whitening (ZCA, $x \mapsto \Sigma^{-1/2}(x - m)$)
# reaches 1.
#
# A caveat the numbers below show: with an ill-conditioned $\Sigma$, removing the
# mean need not lower $\kappa$. Adding the positive semi-definite $m m^\top$
# raises *every* eigenvalue (Weyl: $\lambda_i(\Sigma + mm^\top) \ge \lambda_i(\Sigma)$),
# the largest by at most $\lVert m\rVert^2$; when $m$ has a component along a
# low-variance direction it lifts $\lambda_{\min}$ too, and here the uncentered
# $\kappa$ comes out slightly *below* $\kappa(\Sigma)$. The clean statement is the
# isotropic one above; for correlated inputs it is whitening that fixes $\kappa$.

# %%
m = 2.0
X = cv.exact_moment_sample(n, np.full(d, m), np.eye(d), seed=1)
H_unc = cv.hessian(linear_unit_loss(X, y_lin), np.zeros(d))
H_cen = cv.hessian(linear_unit_loss(X - X.mean(axis=0), y_lin), np.zeros(d))
X_bn = normref.batch_norm(X, None, None, training=True, eps=0.0)
H_bn = cv.hessian(linear_unit_loss(X_bn, y_lin), np.zeros(d))
k_unc, k_cen, k_bn = (cv.condition_number(M).kappa for M in (H_unc, H_cen, H_bn))
print(f"Sigma = I, mean 2: uncentered {k_unc:.6g}, centered {k_cen:.6g}, batch-normalized {k_bn:.6g}")
assert abs(k_unc - 65.0) <= 1e-9 * 65 and abs(k_cen - 1) <= 1e-12 and abs(k_bn - 1) <= 1e-12

d2 = 10
lam = np.logspace(0.0, 2.0, d2)
Q, _ = np.linalg.qr(rng.standard_normal((d2, d2)))
Sigma = (Q * lam) @ Q.T
X2 = cv.exact_moment_sample(n, np.full(d2, 1.5), Sigma, seed=2)
y2 = rng.standard_normal(n)
Xc = X2 - X2.mean(axis=0)
ev_S, V_S = np.linalg.eigh(Xc.T @ Xc / n)
X_white = Xc @ (V_S / np.sqrt(ev_S)) @ V_S.T
spectra = {}
for label, Xv in (("uncentered", X2), ("centered", Xc), ("whitened", X_white)):
    Hv = cv.hessian(linear_unit_loss(Xv, y2), np.zeros(d2))
    spectra[label] = np.linalg.eigvalsh(Hv)
    print(f"Sigma with kappa 100, mean 1.5: {label:10s} kappa(H) = {cv.condition_number(Hv).kappa:.6g}")
assert abs(spectra["centered"].max() / spectra["centered"].min() / 100 - 1) <= 1e-9
assert np.abs(spectra["whitened"] - 1).max() <= 1e-12
k_unc2 = spectra["uncentered"].max() / spectra["uncentered"].min()
m_vec = np.full(d2, 1.5)
assert np.all(spectra["uncentered"] >= spectra["centered"] - 1e-12)                 # Weyl: every eigenvalue rises
assert spectra["uncentered"].max() <= spectra["centered"].max() + m_vec @ m_vec + 1e-12
assert 90 < k_unc2 < 100                                                              # ... here lambda_min rises most

# the library's own rows for this result (LeCun et al. 1998, and K-FAC's kappa(A kron B))
rows = cv.input_conditioning_claims(sampled=False)  # (the exact-moment rows; sampled=True adds two statistical ones)
assert len(rows) == 12 and all(r.passed for r in rows)

# %% [markdown]
# What the condition number costs: gradient descent with step $1/\lambda_{\max}$
# on the uncentered and the centered problem (same targets). The error along
# the slowest eigenvector decays like $(1 - 1/\kappa)^t$.

# %%
def gd_errors(Xv, yv, steps):
    Hm = Xv.T @ Xv / len(yv)
    w_star = np.linalg.solve(Hm, Xv.T @ yv / len(yv))
    step = 1.0 / np.linalg.eigvalsh(Hm).max()
    w = np.zeros(Xv.shape[1])
    errs = []
    for _ in range(steps):
        errs.append(np.linalg.norm(w - w_star) / np.linalg.norm(w_star))
        w = w - step * Xv.T @ (Xv @ w - yv) / len(yv)
    return np.array(errs)


err_unc = gd_errors(X, y_lin, 300)
err_cen = gd_errors(X - X.mean(axis=0), y_lin, 300)
print(f"relative error after 300 steps: uncentered {err_unc[-1]:.2e}, centered {err_cen[-1]:.2e}")
assert err_cen[2] <= 1e-12           # kappa = 1: one step solves it (up to rounding)
assert err_unc[-1] >= 1e-3           # kappa = 65: (1 - 1/65)^300 ~ 1e-2 along the slow direction

fig, axes = plt.subplots(1, 3, figsize=(15, 4), layout="constrained")
mm = np.linspace(0, 3, 100)
axes[0].plot(mm, 1 + d * mm**2, "k-", lw=1, label=r"$1 + d\,m^2$")
axes[0].plot(ms, kappas, "o", label="measured (autograd Hessian)")
axes[0].set_xlabel("input mean $m$")
axes[0].set_ylabel(r"$\kappa(H)$")
axes[0].set_title(rf"linear unit, $\Sigma = I$, $d = {d}$")
axes[0].legend()
for label, ev in spectra.items():
    axes[1].semilogy(np.arange(1, d2 + 1), np.sort(ev)[::-1], "o-", label=label)
axes[1].set_xlabel("eigenvalue index")
axes[1].set_ylabel("eigenvalue of $H$")
axes[1].set_title(r"$\kappa(\Sigma) = 100$, mean $1.5\cdot\mathbf{1}$")
axes[1].legend()
axes[2].semilogy(err_unc, label=r"uncentered ($\kappa = 65$)")
axes[2].semilogy(np.maximum(err_cen, 1e-17), label=r"centered ($\kappa = 1$)")
axes[2].set_xlabel("gradient-descent step")
axes[2].set_ylabel(r"$\|w_t - w^*\| / \|w^*\|$")
axes[2].set_title("gradient descent, step $1/\\lambda_{\\max}$")
axes[2].legend()
show(fig)

# %% [markdown]
# ## 2. Singular curvature: scale invariance and the condition number
#
# For a weight $w$ feeding batch norm, $L(cw) = L(w)$ (notebook 2). For a
# *model* $z(w)$ with this property, $z(cw) = z(w)$ gives $J w = 0$ for its
# Jacobian $J = \partial z/\partial w$, so the Gauss-Newton matrix
# $G = \frac1N J^\top J$ (and the Fisher) is **exactly singular along $w$**:
# $\lambda_{\min}(G) = 0$ and the textbook $\kappa = \lambda_{\max}/\lambda_{\min}$
# is infinite — in floating point, some meaningless number around $10^{16}$.
# The direction is harmless: moving along it does not change the function.
# The useful number is the condition number of $G$ **restricted to the
# orthogonal complement** of the invariant directions.
#
# `cv.condition_number` offers the two treatments, and says in its report which
# one it used:
#
# * `null_space=None` (default): eigenvalues with
#   $|\lambda| \le \mathrm{rtol}\cdot\lambda_{\max}$ (rtol $= 10^{-10}$) are
#   excluded and listed in `report.excluded`;
# * `null_space=U`: $G$ is restricted to $U^\perp$, and nothing else is excluded,
#   so a forgotten invariant direction shows up as an absurd $\kappa$.
#
# The true Hessian is different: $H w = -\nabla L$ (notebook 2), so $H$ is
# singular along $w$ only at a critical point, although $w^\top H w = 0$ always.
#
# The model here is `cv.batch_norm_unit` — $z = \mathrm{BN}(Xw)$, batch norm
# with $\epsilon = 0$ written with normref's reference formulas.

# %%
rng = np.random.default_rng(1)
N_u, d_u = 32, 6
X_u = rng.standard_normal((N_u, d_u)) + 0.5
t_u = rng.standard_normal(N_u)
w_u = rng.standard_normal(d_u)


def model_u(v):
    return cv.batch_norm_unit(X_u, v)


def loss_u(v):
    r = model_u(v) - t_u
    return 0.5 * anp.sum(r * r) / N_u


G = cv.gauss_newton(model_u, w_u, "squared")
H = cv.hessian(loss_u, w_u)
g = autograd.grad(loss_u)(w_u)
normG, normH = np.linalg.norm(G, 2), np.linalg.norm(H, 2)
print(f"||G w|| / (||G|| ||w||) = {np.linalg.norm(G @ w_u) / (normG * np.linalg.norm(w_u)):.1e}")
print(f"w^T H w / (||H|| ||w||^2) = {abs(w_u @ H @ w_u) / (normH * (w_u @ w_u)):.1e},  "
      f"||H w + g|| / ||g|| = {np.linalg.norm(H @ w_u + g) / np.linalg.norm(g):.1e},  "
      f"but ||H w|| / (||H|| ||w||) = {np.linalg.norm(H @ w_u) / (normH * np.linalg.norm(w_u)):.2f}")
assert np.linalg.norm(G @ w_u) <= 1e-14 * normG * np.linalg.norm(w_u)
assert abs(w_u @ H @ w_u) <= 1e-13 * normH * (w_u @ w_u)
assert np.linalg.norm(H @ w_u + g) <= 1e-12 * np.linalg.norm(g)
assert np.linalg.norm(H @ w_u) >= 1e-3 * normH * np.linalg.norm(w_u)   # H w = -g != 0: not singular along w

naive = np.linalg.cond(G)
thresholded = cv.condition_number(G)
projected = cv.condition_number(G, null_space=w_u)
print(f"np.linalg.cond(G)         = {naive:.2e}   (meaningless: lambda_min is rounding noise)")
print("thresholded:", thresholded.describe())
print("projected:  ", projected.describe())
assert naive > 1e12
assert thresholded.n_excluded == 1 and abs(thresholded.excluded[0]) <= 1e-15 * thresholded.lam_max
assert projected.null_space_dim == 1 and projected.n_excluded == 0 and projected.n_retained == d_u - 1
assert abs(projected.kappa / thresholded.kappa - 1) <= 1e-8
# the eigenvector of the smallest eigenvalue of G is w itself
ev_G, V_G = np.linalg.eigh(G)
assert abs(abs(V_G[:, 0] @ w_u) / np.linalg.norm(w_u) - 1) <= 1e-10

# the library's claim rows for the same statements (batch norm and weight norm units)
for unit, name in ((cv.batch_norm_unit, "batch_norm"), (cv.weight_norm_unit, "weight_norm")):
    rows = cv.scale_invariant_curvature_claims(unit, name)
    assert len(rows) == 5 and all(r.passed for r in rows), [(r.id, r.measured) for r in rows]

# %% [markdown]
# ### Counting the null space of a small network
#
# In a network the invariances multiply. A one-hidden-layer MLP
# $x \to W_1 x + b_1 \to \text{norm} \to \tanh \to W_2 h + b_2 \to \mathrm{softmax}$
# (4 inputs, 6 hidden units, 3 classes; $P = 51$ parameters) has these
# parameter directions along which the function does not change:
#
# | network | invariant directions | count |
# |---|---|---|
# | all | softmax: $b_2 \to b_2 + c\mathbf 1$, every row of $W_2$ plus the same $v$ | $1 + 6 = 7$ |
# | batch norm | each hidden unit's row of $W_1$ rescaled; each $b_{1,j}$ shifted | $+\,6 + 6$ |
# | layer norm | $(W_1, b_1)$ rescaled together; $W_1 \to W_1 + \mathbf 1 c^\top$; $b_1 \to b_1 + c\mathbf 1$ | $+\,1 + 4 + 1$ |
#
# With enough samples ($N(K-1) = 128 > P$) these are the *only* null directions of
# the Fisher. The shifts are *linear* invariances ($L(\theta + t u) = L(\theta)$
# for all $t$), so they are null for the Hessian too; the rescalings are not
# ($H u = -\nabla L$ restricted to the rescaled block). We build the networks
# with `normref.nets` (normalizers with $\epsilon = 0$, no affine parameters),
# take the Fisher of the softmax output from the network's `autograd` twin
# (`net.reference_forward`) and check the counts.

# %%
def small_net(norm, seed=1, N=64):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, 4)) + 0.5
    layers = [Linear(4, 6, rng=rng)]
    if norm != "none":
        layers.append(Norm(norm, affine=False, eps=0.0))
    layers += [Activation("tanh"), Linear(6, 3, rng=rng)]
    net = MLP(layers)
    net.set_params(net.params + 0.2 * rng.standard_normal(net.n_params))   # move biases off 0
    return net, X, rng.integers(0, 3, N)


def invariant_directions(net, norm):
    """Columns spanning the invariant parameter directions listed in the table."""
    theta = net.params
    dirs = []

    def vec(layer_idx, name, value):
        """A flat parameter vector: `value` in one parameter of one layer, 0 elsewhere."""
        out = net.split(np.zeros_like(theta))             # one {name: array} per layer
        out[layer_idx][name] = value
        return np.concatenate([a.ravel() for layer in out for a in layer.values()])

    lin1, lin2 = 0, len(net.layers) - 1
    W1, b1 = net.layers[lin1].params["weight"], net.layers[lin1].params["bias"]
    for v in np.eye(6):                                     # softmax: W2 rows + v
        dirs.append(vec(lin2, "weight", np.tile(v, (3, 1))))
    dirs.append(vec(lin2, "bias", np.ones(3)))              # softmax: b2 + c 1
    if norm == "batch_norm":
        for j in range(6):
            row = np.zeros_like(W1)
            row[j] = W1[j]
            dirs.append(vec(lin1, "weight", row))           # rescale row j of W1
            dirs.append(vec(lin1, "bias", np.eye(6)[j]))    # shift b1_j
    if norm == "layer_norm":
        dirs.append(vec(lin1, "weight", W1) + vec(lin1, "bias", b1))   # rescale (W1, b1) together
        for c in np.eye(4):
            dirs.append(vec(lin1, "weight", np.tile(c, (6, 1))))        # W1 + 1 c^T
        dirs.append(vec(lin1, "bias", np.ones(6)))                       # b1 + c 1
    return np.stack(dirs, axis=1)


expected_null = {"none": 7, "batch_norm": 19, "layer_norm": 13}
small_spectra = {}
for norm in ("none", "batch_norm", "layer_norm"):
    net, X_s, y_s = small_net(norm)
    theta = net.params

    def model(v, net=net, X_s=X_s):
        return net.reference_forward(v, X_s)

    F = cv.fisher(model, theta, likelihood="softmax")
    U = invariant_directions(net, norm)
    assert np.linalg.matrix_rank(U) == expected_null[norm]
    assert np.abs(F @ U).max() <= 1e-14 * np.abs(F).max() * np.abs(U).max()   # F U = 0
    thr = cv.condition_number(F)
    prj = cv.condition_number(F, null_space=U)
    partial = cv.condition_number(F, null_space=U[:, :7])    # only the softmax directions
    assert thr.n_excluded == expected_null[norm]             # nothing else is null
    assert prj.null_space_dim == expected_null[norm] and prj.n_retained == net.n_params - expected_null[norm]
    assert abs(prj.kappa / thr.kappa - 1) <= 1e-6            # the two treatments agree
    if norm != "none":
        assert partial.kappa > 1e12                          # a forgotten invariance: absurd kappa
    def loss_s(v, net=net, X_s=X_s, y_s=y_s):
        return net.reference_loss(v, X_s, y_s, "softmax_ce")

    Hs = cv.hessian(loss_s, theta)
    hess_null = int(np.sum(np.abs(np.linalg.eigvalsh(Hs)) <= 1e-10 * np.abs(Hs).max()))
    assert hess_null == {"none": 7, "batch_norm": 13, "layer_norm": 12}[norm]
    if norm == "batch_norm":
        # a row rescaling u_j is not a Hessian null vector: H u_j = -(the gradient's block of row j)
        g_s = autograd.grad(loss_s)(theta)
        for j in range(6):
            u_j = U[:, 7 + 2 * j]
            assert np.linalg.norm(Hs @ u_j + np.where(u_j != 0, g_s, 0.0)) <= 1e-12 * np.abs(Hs).max()
            assert np.linalg.norm(Hs @ U[:, 8 + 2 * j]) <= 1e-13 * np.abs(Hs).max()   # a bias shift is
    small_spectra[norm] = np.linalg.eigvalsh(F)
    forgot = f"{partial.kappa:.1e}" if norm != "none" else "n/a"
    print(f"{norm:10s}: P = {net.n_params}, Fisher null space {thr.n_excluded} (= invariant directions), "
          f"kappa {thr.kappa:.4g} thresholded / {prj.kappa:.4g} projected; "
          f"forgetting the normalizer's directions: {forgot}; Hessian null space {hess_null}")

# %% [markdown]
# ## 3. Fisher spectra of an MLP: none vs batch norm vs layer norm
#
# The test network of `cv.fisher_condition`: layer sizes 8-16-16-4, tanh hidden
# units, softmax output, $W \sim \mathcal N(0, 1/\text{fan-in})$, zero biases,
# and optionally batch norm (training mode) or layer norm after each hidden
# linear layer (no affine parameters, $\epsilon = 10^{-5}$); $N = 64$ Gaussian inputs.
# All three have $P = 484$ parameters. The true Fisher of the softmax output,
#
# $$ F = \frac1N \sum_n J_n^\top \big(\mathrm{diag}(p_n) - p_n p_n^\top\big) J_n ,$$
#
# equals the Gauss-Newton matrix of the cross-entropy loss and has rank at most
# $N(K-1) = 192 < P$ (each $\mathrm{diag}(p) - pp^\top$ has rank $K - 1$). So here
# the null space (292 dimensions) comes from the small batch more than from the
# invariances of section 2, and the condition number is taken on the 192
# retained eigenvalues. That is meaningful only if the spectrum has a clear gap
# at the threshold, which we check.
#
# We rebuild the three networks with `normref.nets` — the same initialization,
# drawn from the same seeded generator — and compute $J_n$ with
# `MLP.output_jacobian`, i.e. with normref's compiled VJPs (no autograd). The
# spectra must match the library's, which come from autograd on the reference
# formulas: two independent implementations of the same matrix.

# %%
sizes, N_f, K = (8, 16, 16, 4), 64, 4


def test_mlp(norm, input_mean=0.0, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N_f, sizes[0])) + input_mean
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(Linear(sizes[i], sizes[i + 1], rng=rng))   # N(0, 1/fan_in), zero bias
        if i < len(sizes) - 2:
            if norm != "none":
                layers.append(Norm(norm, affine=False))          # eps = 1e-5 (the default)
            layers.append(Activation("tanh"))
    return MLP(layers), X


def softmax_fisher(net, X):
    J = net.output_jacobian(X)                                   # (N, K, P), normref VJPs
    z = net.forward(X)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    Hz = np.einsum("nk,kl->nkl", p, np.eye(K)) - np.einsum("nk,nl->nkl", p, p)
    return np.einsum("nkp,nkl,nlq->pq", J, Hz, J) / X.shape[0]


reports, fisher_eigs = {}, {}
for mean in (0.0, 2.0):
    for norm in ("none", "batch_norm", "layer_norm"):
        net, X_f = test_mlp(norm, mean)
        F = softmax_fisher(net, X_f)
        rep = cv.fisher_condition(norm, input_mean=mean)         # the library's: autograd on the reference
        ev = np.linalg.eigvalsh(F)
        assert net.n_params == rep.n == 484
        assert np.abs(np.sort(ev) - np.array(rep.eigenvalues)).max() <= 1e-12 * rep.lam_max
        reports[norm, mean], fisher_eigs[norm, mean] = rep, ev
        excl = max(abs(e) for e in rep.excluded) / rep.lam_max
        print(f"inputs N({mean:g}, 1), {norm:10s}: kappa = {rep.kappa:10.4g}  "
              f"(retained {rep.n_retained}/{rep.n}; largest excluded {excl:.1e} lam_max, "
              f"smallest retained {rep.lam_min / rep.lam_max:.1e} lam_max)")
        assert rep.n_retained == N_f * (K - 1)
        assert excl <= 1e-14 and rep.lam_min >= 1e-8 * rep.lam_max   # a clean gap at the threshold

# Fisher = Gauss-Newton of the cross-entropy (checked once, on the batch-norm net, through autograd)
net, X_f = test_mlp("batch_norm")
model = lambda v: net.reference_forward(v, X_f)   # noqa: E731
Fa = cv.fisher(model, net.params, likelihood="softmax")
Ga = cv.gauss_newton(model, net.params, "softmax")
assert np.abs(Fa - Ga).max() <= 1e-14 * np.abs(Ga).max()

k = {key: r.kappa for key, r in reports.items()}
assert k["batch_norm", 0.0] < k["none", 0.0] and k["layer_norm", 0.0] < k["none", 0.0]
assert abs(k["batch_norm", 2.0] / k["batch_norm", 0.0] - 1) <= 1e-6    # BN removes the input mean
assert k["none", 2.0] > 100 * k["none", 0.0]                            # the LeCun effect, in a network
assert k["layer_norm", 2.0] > k["none", 2.0]                            # LN does not remove a data-set mean
for r in cv.normalization_fisher_claims() + cv.input_mean_fisher_claims():
    assert r.passed, r.id

# %% [markdown]
# Centered inputs: both normalizers lower $\kappa$ at initialization (here by a
# factor of about 2). Inputs with mean 2: the plain network's $\kappa$ grows by
# a factor of about 200 — the linear-unit effect of section 1, now in the first
# layer of a network — batch norm's is *exactly* unchanged (it subtracts the
# batch mean of every pre-activation, so a constant added to all inputs never
# reaches the rest of the network), and layer norm's grows with the plain one:
# it normalizes each sample over its features and cannot see a mean shared by
# all samples (Ba et al. 2016, Table 1). This is one seed and one architecture,
# an illustration rather than a theorem.

# %%
fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), layout="constrained")
for ax, mean in zip(axes[:2], (0.0, 2.0)):
    for i, norm in enumerate(("none", "batch_norm", "layer_norm")):
        rep = reports[norm, mean]
        ev = np.sort(np.abs(fisher_eigs[norm, mean]))[::-1]
        ax.semilogy(np.arange(1, ev.size + 1), np.maximum(ev, 1e-20), color=f"C{i}",
                    label=fr"{norm}: $\kappa$ = {rep.kappa:.3g}")
        ax.axhline(rep.threshold, color=f"C{i}", ls=":", lw=0.8)
    ax.axvline(N_f * (K - 1), color="k", ls="--", lw=0.8)
    ax.text(N_f * (K - 1) + 8, 1e-13, "rank\n$N(K-1) = 192$", fontsize=8)
    ax.text(300, 3e-10, r"threshold $10^{-10}\lambda_{\max}$ (dotted)", fontsize=8)
    ax.set_xlabel("eigenvalue index (descending)")
    ax.set_ylabel(r"$|\lambda|$ of the Fisher")
    ax.set_title(f"MLP 8-16-16-4 at init, inputs N({mean:g}, 1)")
    ax.set_ylim(1e-20, 10)
    ax.legend(fontsize=8)
for i, norm in enumerate(("none", "batch_norm", "layer_norm")):
    ev = np.sort(small_spectra[norm])[::-1]
    axes[2].semilogy(np.arange(1, ev.size + 1), np.maximum(np.abs(ev), 1e-20), "o-", ms=3, color=f"C{i}",
                     label=f"{norm}: {expected_null[norm]} null directions")
axes[2].set_xlabel("eigenvalue index (descending)")
axes[2].set_ylabel(r"$|\lambda|$ of the Fisher")
axes[2].set_title("MLP 4-6-3, N = 64: null space = invariances")
axes[2].set_ylim(1e-20, 10)
axes[2].legend(fontsize=8)
show(fig)

# %% [markdown]
# ## Summary
#
# * For a linear unit, an input mean multiplies the Hessian's condition number
#   by $1 + d m^2$ (65 for $d = 16$, $m = 2$); centering or batch norm gives
#   $\kappa(\Sigma)$, whitening gives 1 — and gradient descent feels the
#   difference immediately.
# * Normalized models have exactly singular Gauss-Newton/Fisher matrices along
#   their invariant directions (weight rescaling, bias shifts, the softmax
#   shift). A condition number must say how it treats them:
#   `cv.condition_number` either excludes eigenvalues below
#   $10^{-10}\lambda_{\max}$ or projects out a given null space, and both agree
#   when the gap is clean; forgetting a direction gives $\kappa \sim 10^{16}$.
# * At initialization, batch norm and layer norm both improve the Fisher's
#   conditioning of a small tanh MLP with centered inputs; with uncentered
#   inputs only batch norm keeps it, since only it removes a data-set mean.
