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
# # 1. The batch-norm backward pass, derived step by step
#
# Batch normalization (Ioffe & Szegedy 2015) standardizes every channel over
# the batch, then applies a learned scale $\gamma$ and shift $\beta$.
# Its gradient is short to write down, but it is easy to get subtly wrong,
# and the usual quick test of it (back-propagating `y.sum()`) cannot catch
# the mistakes. In this notebook we
#
# 1. draw the computational graph of the forward pass,
# 2. apply the chain rule node by node, in plain NumPy,
# 3. simplify the result to the closed form
#    $\bar x = \frac{\gamma}{\sigma}\big(\bar y - \mathrm{mean}(\bar y)
#    - \hat x\,\mathrm{mean}(\bar y\,\hat x)\big)$,
# 4. check it against `normref` (exact float64 derivatives) and against finite
#    differences,
# 5. see why an all-ones cotangent is a useless test, and
# 6. read the Jacobian as a scaled **orthogonal projection** — the structural
#    reason normalization discards two directions of the input.
#
# Every claim below is checked with an `assert` and an explicit tolerance.

# %%
import io

import matplotlib

matplotlib.use("Agg")  # non-interactive: figures are rendered to PNG and displayed inline
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, display

import normref


def show(fig):
    """Render a figure to PNG and display it (works with any kernel and backend)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    display(Image(data=buf.getvalue()))


def rel_err(a, b):
    """max |a - b| relative to max |b|."""
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# %% [markdown]
# ## The forward pass as a computational graph
#
# Take a batch $x \in \mathbb R^{N \times C}$ ($N$ samples, $C$ channels).
# Every channel is normalized on its own, so fix one channel and call its
# $m = N$ values $x_1, \dots, x_m$ (for images, $m = N H W$). The forward pass
# is a chain of simple nodes:
#
# $$
# \begin{aligned}
# \mu &= \frac1m \sum_i x_i &&\text{(mean)}\\
# d_i &= x_i - \mu &&\text{(centered)}\\
# v &= \frac1m \sum_i d_i^2 &&\text{(biased variance)}\\
# \sigma &= \sqrt{v + \epsilon}, \qquad s = 1/\sigma &&\text{(inverse std)}\\
# \hat x_i &= d_i\, s &&\text{(standardized)}\\
# y_i &= \gamma\, \hat x_i + \beta &&\text{(affine)}
# \end{aligned}
# $$
#
# $$x \longrightarrow \mu \longrightarrow d \longrightarrow v \longrightarrow
# \sigma \longrightarrow s \longrightarrow \hat x \longrightarrow y$$
#
# (with the extra edges $x \to d$ and $d \to \hat x$). Below is the forward pass
# in plain NumPy, vectorized over channels (axis 0 is the batch), keeping every
# intermediate for the backward pass. It must agree with
# `normref.batch_norm(..., training=True)`, which mirrors
# `torch.nn.functional.batch_norm`.

# %%
def bn_forward(x, gamma, beta, eps):
    mu = x.mean(axis=0)
    d = x - mu
    v = (d * d).mean(axis=0)
    sigma = np.sqrt(v + eps)
    s = 1.0 / sigma
    xhat = d * s
    y = gamma * xhat + beta
    cache = dict(x=x, mu=mu, d=d, v=v, sigma=sigma, s=s, xhat=xhat, gamma=gamma, m=x.shape[0])
    return y, cache


rng = np.random.default_rng(0)
N, C, eps = 16, 3, 1e-5
x = rng.standard_normal((N, C)) * np.array([0.5, 2.0, 3.0]) + np.array([1.0, -2.0, 0.3])
gamma = rng.standard_normal(C)
beta = rng.standard_normal(C)

y, cache = bn_forward(x, gamma, beta, eps)
y_ref = normref.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)
print("max |y - y_normref| =", np.abs(y - y_ref).max())
assert np.abs(y - y_ref).max() <= 1e-14 * np.abs(y_ref).max()

# %% [markdown]
# ## The chain rule, node by node
#
# Reverse mode walks the graph backwards. Write $\bar u = \partial L/\partial u$
# for the *adjoint* of a node $u$, where $L$ is whatever scalar the network
# computes downstream; we are given $\bar y$ (the **cotangent**, `dy`). Each
# node passes its adjoint to its inputs, and adjoints arriving along several
# edges add up:
#
# $$
# \begin{aligned}
# \bar\beta &= \sum_i \bar y_i, \qquad \bar\gamma = \sum_i \bar y_i \hat x_i \\
# \bar{\hat x}_i &= \gamma\, \bar y_i \\
# \bar s &= \sum_i \bar{\hat x}_i\, d_i \\
# \bar d_i &\mathrel{+}= \bar{\hat x}_i\, s &&\text{(edge } d \to \hat x)\\
# \bar\sigma &= -\bar s / \sigma^2 &&(s = 1/\sigma)\\
# \bar v &= \bar\sigma / (2\sigma) &&(\sigma = \sqrt{v+\epsilon})\\
# \bar d_i &\mathrel{+}= \bar v\, \frac{2 d_i}{m} &&\text{(edge } d \to v)\\
# \bar \mu &= -\sum_i \bar d_i &&(d_i = x_i - \mu)\\
# \bar x_i &= \bar d_i + \bar\mu / m &&\text{(edges } x \to d,\ x \to \mu)
# \end{aligned}
# $$
#
# There is no separate edge $\mu \to v$: the variance is a function of the
# centered values $d$ only. (Had we written $v = \frac1m\sum x_i^2 - \mu^2$, the
# edge would be there, and its contribution $\bar v\,\partial v/\partial\mu =
# -\frac2m\bar v\sum_i d_i$ would vanish because $\sum_i d_i = 0$.)

# %%
def bn_backward_graph(dy, cache):
    """Reverse mode through the graph above, one node at a time."""
    d, s, sigma, xhat, gamma, m = (cache[k] for k in ("d", "s", "sigma", "xhat", "gamma", "m"))
    dbeta = dy.sum(axis=0)
    dgamma = (dy * xhat).sum(axis=0)
    dxhat = gamma * dy
    ds = (dxhat * d).sum(axis=0)
    dd = dxhat * s                      # edge d -> xhat
    dsigma = -ds / sigma**2
    dv = dsigma / (2.0 * sigma)
    dd = dd + dv * 2.0 * d / m          # edge d -> v
    dmu = -dd.sum(axis=0)
    dx = dd + dmu / m                   # edges x -> d and x -> mu
    return dx, dgamma, dbeta


dy = rng.standard_normal((N, C))        # a random cotangent (never all ones: see below)
dx_graph, dgamma_graph, dbeta_graph = bn_backward_graph(dy, cache)

# %% [markdown]
# ## Simplifying to the closed form
#
# Substitute the nodes into each other, using $d_i = \sigma \hat x_i$:
#
# $$
# \bar s = \gamma \sum_i \bar y_i d_i = \gamma\sigma \sum_i \bar y_i \hat x_i,
# \qquad
# \bar v = -\frac{\bar s}{2\sigma^3} = -\frac{\gamma}{2\sigma^2}\sum_i \bar y_i \hat x_i,
# $$
#
# $$
# \bar d_i = \frac{\gamma}{\sigma}\bar y_i + \frac{2 d_i}{m}\bar v
# = \frac{\gamma}{\sigma}\Big(\bar y_i - \hat x_i\, \tfrac1m\textstyle\sum_j \bar y_j \hat x_j\Big).
# $$
#
# Because $\sum_i \hat x_i = 0$, $\ \sum_i \bar d_i = \frac{\gamma}{\sigma}\sum_i \bar y_i$,
# so $\bar\mu / m = -\frac{\gamma}{\sigma}\,\mathrm{mean}(\bar y)$ and
#
# $$
# \boxed{\;\bar x = \frac{\gamma}{\sigma}\Big(\bar y - \mathrm{mean}(\bar y)
#   - \hat x\,\mathrm{mean}(\bar y\,\hat x)\Big)\;}
# \qquad \text{(per channel; means over the } m \text{ values)}.
# $$
#
# In words: remove from $\bar y$ its mean and its component along $\hat x$,
# then scale by $\gamma/\sigma$. The formula holds for any $\epsilon \ge 0$
# (with $\sigma = \sqrt{v+\epsilon}$).

# %%
def bn_backward_closed(dy, cache):
    xhat, sigma, gamma = cache["xhat"], cache["sigma"], cache["gamma"]
    dx = gamma / sigma * (dy - dy.mean(axis=0) - xhat * (dy * xhat).mean(axis=0))
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)


dx_closed, dgamma_closed, dbeta_closed = bn_backward_closed(dy, cache)
print("graph vs closed form:", rel_err(dx_graph, dx_closed))
assert rel_err(dx_graph, dx_closed) <= 1e-13
assert rel_err(dgamma_graph, dgamma_closed) <= 1e-14
assert rel_err(dbeta_graph, dbeta_closed) <= 1e-14

# %% [markdown]
# ## Check 1: against normref
#
# `normref.vjp(f, *args)` works like `jax.vjp`: it returns the output and a
# *pullback* that maps a cotangent to one gradient per positional argument
# (`None` for the non-differentiable ones: here the running statistics, the
# `training` flag, `momentum` and `eps`). normref computes it on a separate,
# compiled code path in float64, so agreement to ~1e-15 relative is a real
# check, not a tautology.

# %%
y_nr, pullback = normref.vjp(normref.batch_norm, x, None, None, gamma, beta, True, 0.1, eps)
grads = pullback(dy)
dx_nr, dgamma_nr, dbeta_nr = grads[0], grads[3], grads[4]
assert grads[1] is None and grads[2] is None
for name, ours, ref in (("dx", dx_closed, dx_nr), ("dgamma", dgamma_closed, dgamma_nr),
                        ("dbeta", dbeta_closed, dbeta_nr)):
    print(f"{name:7s} relative error vs normref: {rel_err(ours, ref):.2e}")
    assert rel_err(ours, ref) <= 1e-13

# %% [markdown]
# ## Check 2: against finite differences
#
# Central differences of the scalar $L(x) = \sum_{n,c} \bar y_{nc}\, y_{nc}(x)$,
# whose gradient is exactly the VJP $\bar x$:
# $\partial L/\partial x_k \approx (L(x + h e_k) - L(x - h e_k))/(2h)$.
# The truncation error is $O(h^2)$ and the rounding error $O(10^{-16}/h)$; with
# $h = 10^{-5}$ both are around $10^{-10}$, so we ask for agreement to $10^{-7}$
# relative — eight orders of magnitude tighter than any of the bugs below.

# %%
def L_of(x_, gamma_=gamma, beta_=beta):
    return float(np.sum(dy * normref.batch_norm(x_, None, None, gamma_, beta_, training=True, eps=eps)))


h = 1e-5
fd_x = np.zeros_like(x)
for idx in np.ndindex(x.shape):
    e = np.zeros_like(x)
    e[idx] = h
    fd_x[idx] = (L_of(x + e) - L_of(x - e)) / (2 * h)
fd_gamma = np.array([(L_of(x, gamma + h * e) - L_of(x, gamma - h * e)) / (2 * h) for e in np.eye(C)])
fd_beta = np.array([(L_of(x, gamma, beta + h * e) - L_of(x, gamma, beta - h * e)) / (2 * h) for e in np.eye(C)])
print(f"finite differences: dx {rel_err(dx_closed, fd_x):.1e}, dgamma {rel_err(dgamma_closed, fd_gamma):.1e}, "
      f"dbeta {rel_err(dbeta_closed, fd_beta):.1e}")
assert rel_err(dx_closed, fd_x) <= 1e-7
assert rel_err(dgamma_closed, fd_gamma) <= 1e-7
assert rel_err(dbeta_closed, fd_beta) <= 1e-7

# %% [markdown]
# ## Why an all-ones cotangent is a useless test
#
# A common "gradient test" is `y.sum().backward()`, i.e. $\bar y = \mathbf 1$.
# Put it into the closed form: $\mathrm{mean}(\mathbf 1) = 1$ and
# $\mathrm{mean}(\mathbf 1\cdot\hat x) = \mathrm{mean}(\hat x) = 0$, so
#
# $$\bar x = \frac{\gamma}{\sigma}\,(\mathbf 1 - \mathbf 1 - \hat x \cdot 0) = 0 .$$
#
# The input gradient vanishes identically — the sum of a batch-normalized
# channel is $m\beta$, whatever $x$ is. So *any* backward pass that returns
# zeros for this cotangent passes the test, including several plausible bugs.
# (More generally, at $\epsilon = 0$ every cotangent in
# $\mathrm{span}\{\mathbf 1, \hat x\}$ has $\bar x = 0$ — we will see why in
# the next section.) Three buggy versions:

# %%
def bug_no_variance_path(dy, c):       # forgot that sigma depends on x
    return c["gamma"] / c["sigma"] * (dy - dy.mean(axis=0))


def bug_sign(dy, c):                   # + instead of - on the xhat term
    return c["gamma"] / c["sigma"] * (dy - dy.mean(axis=0) + c["xhat"] * (dy * c["xhat"]).mean(axis=0))


def bug_sum_not_mean(dy, c):           # sum instead of mean in the xhat term
    return c["gamma"] / c["sigma"] * (dy - dy.mean(axis=0) - c["xhat"] * (dy * c["xhat"]).sum(axis=0))


ones = np.ones_like(y)
dx_true_ones = pullback(ones)[0]
print(f"normref dx for dy = 1: max |dx| = {np.abs(dx_true_ones).max():.1e}  (exactly 0 up to rounding)")
assert np.abs(dx_true_ones).max() <= 1e-14

print(f"{'implementation':22s} {'error, dy = ones':>17s} {'error, random dy':>17s}")
for bug in (bug_no_variance_path, bug_sign, bug_sum_not_mean):
    err_ones = np.abs(bug(ones, cache) - dx_true_ones).max()
    err_rand = rel_err(bug(dy, cache), dx_nr)
    print(f"{bug.__name__:22s} {err_ones:17.1e} {err_rand:17.2f}")
    assert err_ones <= 1e-13 * np.abs(gamma / cache["sigma"]).max()   # the all-ones test passes the bug ...
    assert err_rand >= 1e-2     # ... a random cotangent exposes it (finite differences resolve 1e-7)

# at eps = 0 a cotangent along xhat is just as blind (for eps > 0 see the next section)
_, pullback0 = normref.vjp(normref.batch_norm, x, None, None, gamma, beta, True, 0.1, 0.0)
xhat0 = (x - x.mean(axis=0)) / x.std(axis=0)
dx_along_xhat = pullback0(xhat0)[0]
print(f"dx for dy = xhat (eps = 0): max |dx| = {np.abs(dx_along_xhat).max():.1e}")
assert np.abs(dx_along_xhat).max() <= 1e-13 * np.abs(gamma / x.std(axis=0)).max()

# %% [markdown]
# ## The Jacobian is a scaled orthogonal projection
#
# Differentiating the closed form (which is linear in $\bar y$) gives the
# Jacobian of one channel, an $m \times m$ matrix:
#
# $$
# J = \frac{\partial y}{\partial x} = \frac{\gamma}{\sigma}\Big(I - \frac{\mathbf 1\mathbf 1^\top}{m}
#     - \frac{\hat x\hat x^\top}{m}\Big),
# \qquad \bar x = J^\top \bar y = J \bar y .
# $$
#
# Take $\epsilon = 0$. Then $\mathbf 1^\top \hat x = \sum_i \hat x_i = 0$ and
# $\|\hat x\|^2 = m$, so $\mathbf 1/\sqrt m$ and $\hat x/\sqrt m$ are
# orthonormal, and $P = I - \frac{\mathbf 1\mathbf 1^\top}{m} - \frac{\hat x\hat x^\top}{m}$
# is the **orthogonal projection onto** $\mathrm{span}\{\mathbf 1, \hat x\}^\perp$:
# $P = P^\top = P^2$. Hence
#
# * $J$ is symmetric (for $\gamma = 1$, or any scalar $\gamma$ per channel),
# * its null space is $\mathrm{span}\{\mathbf 1, \hat x\}$: shifting a channel
#   ($x \to x + c\mathbf 1$) or moving along $\hat x$ (since
#   $x + t\hat x = \mu + (1 + t/\sigma)(x - \mu)$, a rescaling about the mean)
#   does not change the output,
# * its eigenvalues are $0$ (twice) and $\gamma/\sigma$ ($m - 2$ times).
#
# Channels do not interact, so the full Jacobian of the $(N, C)$ batch is block
# diagonal after grouping the entries by channel. `normref.jacobian` returns it
# with shape `y.shape + x.shape`; it is assembled in closed form, independently
# of our derivation.

# %%
m = 12
xj = rng.standard_normal((m, C)) * np.array([0.7, 1.5, 2.5]) + np.array([0.5, -1.0, 2.0])
ones_C = np.ones(C)
J4 = normref.jacobian(normref.batch_norm, xj, None, None, ones_C, None, True, 0.1, 0.0, wrt=0)
print("normref.jacobian shape:", J4.shape)       # (m, C, m, C)

mu_j, sig_j = xj.mean(axis=0), xj.std(axis=0)   # eps = 0: sigma is the plain std
xhat_j = (xj - mu_j) / sig_j

# cross-channel blocks vanish
for c in range(C):
    for c2 in range(C):
        if c != c2:
            assert np.abs(J4[:, c, :, c2]).max() == 0.0

eigs = []
for c in range(C):
    Jc = J4[:, c, :, c]
    scale = 1.0 / sig_j[c]
    P = Jc / scale
    P_pred = np.eye(m) - np.ones((m, m)) / m - np.outer(xhat_j[:, c], xhat_j[:, c]) / m
    assert np.abs(P - P_pred).max() <= 1e-13                      # the closed form
    assert np.abs(Jc - Jc.T).max() <= 1e-15 * scale               # symmetric
    assert np.abs(P @ P - P).max() <= 1e-14                       # idempotent: a projection
    assert np.linalg.norm(Jc @ np.ones(m)) <= 1e-14 * scale * np.sqrt(m)       # J 1 = 0
    assert np.linalg.norm(Jc @ xhat_j[:, c]) <= 1e-14 * scale * np.sqrt(m)     # J xhat = 0
    ev = np.linalg.eigvalsh(Jc)
    eigs.append(ev)
    assert np.abs(ev[:2]).max() <= 1e-14 * scale                  # eigenvalue 0, twice
    assert np.abs(ev[2:] / scale - 1.0).max() <= 1e-13            # gamma/sigma, m - 2 times
    print(f"channel {c}: sigma = {sig_j[c]:.4f}, eigenvalues {ev[0]:+.1e}, {ev[1]:+.1e}, "
          f"then {ev[2]:.6f} ... {ev[-1]:.6f} (1/sigma = {scale:.6f})")

# the VJP is this matrix applied to the cotangent
dyj = rng.standard_normal((m, C))
_, pb_j = normref.vjp(normref.batch_norm, xj, None, None, ones_C, None, True, 0.1, 0.0)
J_flat = J4.reshape(m * C, m * C)
assert rel_err(pb_j(dyj)[0].ravel(), J_flat.T @ dyj.ravel()) <= 1e-13

# %% [markdown]
# With $\epsilon > 0$ the picture shifts slightly: $\|\hat x\|^2 = m\,v/(v+\epsilon) < m$,
# so $\hat x$ is no longer an exact null vector. From the formula,
# $J\hat x = \frac{\gamma}{\sigma}\big(1 - \frac{v}{v+\epsilon}\big)\hat x
# = \frac{\gamma}{\sigma}\,\frac{\epsilon}{v+\epsilon}\,\hat x$: an eigenvalue of
# relative size $\epsilon/(v+\epsilon)$ instead of 0. The direction $\mathbf 1$
# stays exactly null (a shift never changes the output).

# %%
eps_big = 1e-2
J_eps = normref.jacobian(normref.batch_norm, xj, None, None, ones_C, None, True, 0.1, eps_big, wrt=0)
c = 0
v0 = xj[:, c].var()
sigma_eps = np.sqrt(v0 + eps_big)
xhat_eps = (xj[:, c] - xj[:, c].mean()) / sigma_eps
Jc_eps = J_eps[:, c, :, c]
lam_pred = eps_big / (v0 + eps_big) / sigma_eps
assert np.linalg.norm(Jc_eps @ xhat_eps - lam_pred * xhat_eps) <= 1e-13 * np.linalg.norm(xhat_eps) / sigma_eps
assert np.linalg.norm(Jc_eps @ np.ones(m)) <= 1e-14 * np.sqrt(m) / sigma_eps
ev_eps = np.linalg.eigvalsh(Jc_eps)
print(f"eps = {eps_big}: smallest eigenvalues {ev_eps[0]:.1e}, {ev_eps[1]:.6e} "
      f"(predicted (eps/(v+eps))/sigma = {lam_pred:.6e})")
assert abs(ev_eps[1] - lam_pred) <= 1e-12 / sigma_eps

# %% [markdown]
# ## Picture: the Jacobian and its spectrum
#
# Left: the full $(mC) \times (mC)$ Jacobian with rows and columns grouped by
# channel — three symmetric diagonal blocks, each close to $I/\sigma_c$ minus two
# rank-one terms, and zeros between channels. Right: the eigenvalues of each
# block; two are exactly 0, all the others sit on the line $1/\sigma_c$.

# %%
order = np.array([n * C + c for c in range(C) for n in range(m)])   # channel-major
J_grouped = J_flat[np.ix_(order, order)]
vmax = np.abs(J_grouped).max()

fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
im = axes[0].imshow(J_grouped, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
axes[0].set_title(r"$\partial y/\partial x$ grouped by channel ($\gamma=1$, $\epsilon=0$)")
axes[0].set_xlabel("input index (channel-major)")
axes[0].set_ylabel("output index (channel-major)")
fig.colorbar(im, ax=axes[0], shrink=0.8)
for c, ev in enumerate(eigs):
    k = np.arange(1, m + 1) + 0.15 * (c - 1)
    axes[1].plot(k, ev, "o", label=fr"channel {c}: $1/\sigma$ = {1 / sig_j[c]:.3f}")
    axes[1].axhline(1 / sig_j[c], color=f"C{c}", lw=0.8, ls="--")
axes[1].set_xlabel("eigenvalue index (ascending)")
axes[1].set_ylabel("eigenvalue")
axes[1].set_title("spectrum of each channel block: 0, 0, then $1/\\sigma$")
axes[1].legend()
show(fig)

# %% [markdown]
# ## Summary
#
# * The backward pass of batch norm is
#   $\bar x = \frac{\gamma}{\sigma}\big(\bar y - \mathrm{mean}(\bar y) - \hat x\,\mathrm{mean}(\bar y\hat x)\big)$,
#   $\bar\gamma = \sum \bar y\hat x$, $\bar\beta = \sum\bar y$ — derived node by
#   node, and confirmed against normref to ~1e-15 and finite differences to ~1e-10.
# * Test gradients with a **random** cotangent: $\bar y = \mathbf 1$ (or any
#   cotangent in $\mathrm{span}\{\mathbf 1, \hat x\}$) gives $\bar x = 0$ for the
#   correct formula and for many wrong ones.
# * The Jacobian is $\gamma/\sigma$ times the orthogonal projection that removes
#   the mean direction and the $\hat x$ direction: batch norm's gradient is blind
#   to shifts and (exactly at $\epsilon = 0$) to rescalings of its input — the
#   root of the scale invariance studied in the next notebook.
