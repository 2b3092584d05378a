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
# # 2. Scale invariance and the training dynamics it creates
#
# A weight vector $w$ that feeds batch norm (or layer norm, or weight norm)
# cannot change the network's output by changing its **length**: only its
# direction matters. This notebook derives what that implies for the gradient,
# the Hessian and plain SGD, and measures each statement with normref's exact
# float64 gradients:
#
# 1. $L(cw) = L(w)$, $\nabla L(cw) = \nabla L(w)/c$, $\langle w, \nabla L\rangle = 0$,
#    $H w = -\nabla L$;
# 2. SGD on such a weight runs with an **effective learning rate**
#    $\eta/\lVert w\rVert^2$, and without weight decay the norm can only grow:
#    $\lVert w_{t+1}\rVert^2 = \lVert w_t\rVert^2 + \eta^2\lVert g_t\rVert^2$ exactly;
# 3. with weight decay $\lambda$ the norm settles where growth and decay balance,
#    and the angle turned per step approaches $\sqrt{2\eta\lambda/(1+\mu)}$
#    (momentum $\mu$) — *spherical motion dynamics*.
#
# The problems, SGD and the claim checks come from
# `normref.analysis.invariance` and `normref.analysis.dynamics`.

# %%
import io
import math

import matplotlib

matplotlib.use("Agg")  # non-interactive: figures are rendered to PNG and displayed inline
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, display

from normref.analysis import dynamics as D
from normref.analysis import invariance as I


def show(fig):
    """Render a figure to PNG and display it (works with any kernel and backend)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    display(Image(data=buf.getvalue()))


# %% [markdown]
# ## The problem: one unit followed by batch norm
#
# `D.make_problem("batch_norm")` builds data $X \in \mathbb R^{32 \times 8}$
# (Gaussian with mean 0.5), targets $t$, and the loss of one unit
#
# $$
# L(w) = \frac1{2n}\,\big\lVert \mathrm{BN}(X_B w) - t_B \big\rVert^2,
# \qquad \mathrm{BN}(z) = \frac{z - \mathrm{mean}(z)}{\mathrm{std}(z)},
# $$
#
# over a mini-batch $B$ of $n$ rows (all rows by default). It returns
# `loss_grad(w, batch) -> (L, g)` with $g$ from `normref.vjp`, and a start $w_0$.
# Batch norm runs with $\epsilon = 0$, which makes the invariance exact (see the
# end of the next section for $\epsilon > 0$).

# %%
loss_grad, w0 = D.make_problem("batch_norm")
L0, g0 = loss_grad(w0)
print(f"d = {w0.size}, ||w0|| = {np.linalg.norm(w0):.4f}, L(w0) = {L0:.6f}, ||g0|| = {np.linalg.norm(g0):.4f}")

# %% [markdown]
# ## Consequences of scale invariance
#
# For $c > 0$, $\mathrm{mean}(X(cw)) = c\,\mathrm{mean}(Xw)$ and
# $\mathrm{std}(X(cw)) = c\,\mathrm{std}(Xw)$, so $\mathrm{BN}(X(cw)) = \mathrm{BN}(Xw)$ and
#
# $$ L(cw) = L(w) \qquad (c > 0). $$
#
# Differentiate this identity three ways:
#
# * in $w$: $\ c\,\nabla L(cw) = \nabla L(w)$, i.e. $\ \nabla L(cw) = \nabla L(w)/c$
#   — **a longer weight gets a smaller gradient**;
# * in $c$ at $c = 1$: $\ \langle w, \nabla L(w)\rangle = 0$ — the gradient is
#   orthogonal to the weight (Euler's theorem for a function homogeneous of degree 0);
# * the gradient identity in $c$ at $c = 1$: $\ \nabla^2 L(w)\,w = -\nabla L(w)$,
#   hence $w^\top \nabla^2 L\, w = -\langle w, \nabla L\rangle = 0$: zero curvature
#   along $w$ (but $Hw = 0$ only where the gradient vanishes).

# %%
scales = [0.1, 0.5, 2.0, 10.0]
for c in scales:
    Lc, gc = loss_grad(c * w0)
    print(f"c = {c:5.1f}:  |L(cw) - L(w)|/L = {abs(Lc - L0) / L0:.1e},  "
          f"||c g(cw) - g(w)||/||g|| = {np.linalg.norm(c * gc - g0) / np.linalg.norm(g0):.1e}")
    assert abs(Lc - L0) <= 1e-13 * L0
    assert np.linalg.norm(c * gc - g0) <= 1e-12 * np.linalg.norm(g0)

euler = abs(w0 @ g0) / (np.linalg.norm(w0) * np.linalg.norm(g0))
print(f"|<w, g>| / (||w|| ||g||) = {euler:.1e}")
assert euler <= 1e-14

# H w = -g: the derivative of the gradient along w, by central differences of normref gradients
h = 1e-4
Hw_fd = (loss_grad((1 + h) * w0)[1] - loss_grad((1 - h) * w0)[1]) / (2 * h)
print(f"||H w + g|| / ||g|| (finite differences, h = {h:g}) = {np.linalg.norm(Hw_fd + g0) / np.linalg.norm(g0):.1e}")
assert np.linalg.norm(Hw_fd + g0) <= 1e-7 * np.linalg.norm(g0)

# %% [markdown]
# The same identities, with the exact Hessian: `I.scale_invariance_measurements`
# measures them on its own batch-norm, layer-norm and weight-norm problems with
# `autograd.hessian` of normref's reference formulas (every entry is a relative
# residual predicted to be 0). At a zero-residual minimum the Hessian is
# singular along $w$, so its plain condition number is infinite (`kappa_full`,
# ~1e16 in floating point); the meaningful one lives on the complement of the
# invariance directions (`kappa_meas`, checked against the Gauss-Newton
# prediction `kappa_pred` from `normref.jacobian`).

# %%
for name in ("batch_norm", "layer_norm", "weight_norm"):
    m = I.scale_invariance_measurements(name)
    print(f"{name:11s} loss {m['loss']:.0e}  grad {m['grad']:.0e}  hessian {m['hessian']:.0e}  "
          f"<w,g> {m['euler']:.0e}  Hw+g {m['hw']:.0e}  w^T H w {m['curvature_w']:.0e}  "
          f"| kappa: full {m['kappa_full']:.1e}, on the complement {m['kappa_meas']:.4g}")
    for key in ("loss", "grad", "hessian", "euler", "hw", "curvature_w", "null_at_min"):
        assert m[key] <= 1e-10, (name, key, m[key])
    assert abs(m["kappa_meas"] / m["kappa_pred"] - 1) <= 1e-8
    assert m["kappa_full"] > 1e12
assert all(row.passed for row in I.scale_invariance_claims())

# %% [markdown]
# With $\epsilon > 0$ the normalizer divides by $\sqrt{\mathrm{Var} + \epsilon}$,
# which does not scale with $c$: invariance is only approximate, with a defect of
# order $\epsilon/(c^2\,\mathrm{Var})$ — it matters for small weights.

# %%
loss_grad_eps, _ = D.make_problem("batch_norm", eps=1e-3)
defect = {c: abs(loss_grad_eps(c * w0)[0] - loss_grad_eps(w0)[0]) / loss_grad_eps(w0)[0] for c in (0.1, 10.0)}
print("eps = 1e-3: relative change of L at c = 0.1: %.1e, at c = 10: %.1e" % (defect[0.1], defect[10.0]))
assert defect[0.1] > 1e-4 and defect[10.0] < defect[0.1]

# %% [markdown]
# ## SGD: the effective learning rate and norm growth
#
# Write $w = r\,u$ with $r = \lVert w\rVert$ and $\lVert u\rVert = 1$. By the
# scaling law, $g = \nabla L(w) = \nabla L(u)/r$. One SGD step
# $w_{t+1} = w_t - \eta\, g_t$ then does two things:
#
# * **Norm**: because $g_t \perp w_t$, Pythagoras gives, exactly,
#   $$\lVert w_{t+1}\rVert^2 = \lVert w_t\rVert^2 + \eta^2 \lVert g_t\rVert^2 .$$
#   Without weight decay the norm can only grow.
# * **Direction**: $w_{t+1}/r_t = u_t - \frac{\eta}{r_t^2}\nabla L(u_t)$: on the
#   unit sphere the step is a gradient step with the **effective learning rate**
#   $$\eta_{\rm eff} = \eta/\lVert w_t\rVert^2, \qquad
#   \tan\angle(w_t, w_{t+1}) = \eta_{\rm eff}\,\lVert\nabla L(u_t)\rVert .$$
#
# Together: as the norm grows, the effective learning rate decays by itself
# (batch norm "tunes" the learning rate; Arora, Li & Lyu 2019). We run
# mini-batch SGD (8 of 32 rows per step, PyTorch's update rule) from a unit-norm
# start and check both identities at every step.

# %%
lr, steps = 0.5, 300
u0 = w0 / np.linalg.norm(w0)
batches = D.random_batches(32, 8, steps, seed=3)
tr = D.sgd(loss_grad, u0, lr=lr, steps=steps, batches=batches)   # Trajectory: w[t], g[t], loss[t], lr[t]

n2 = np.sum(tr.w**2, axis=1)
growth_resid = np.abs(n2[1:] - (n2[:-1] + lr**2 * np.sum(tr.g**2, axis=1))) / n2[1:]
print(f"||w|| grows {math.sqrt(n2[0]):.4f} -> {math.sqrt(n2[-1]):.4f};  "
      f"max residual of the norm law: {growth_resid.max():.1e}")
assert growth_resid.max() <= 1e-14
assert np.all(np.diff(n2) > 0)

delta = D.angular_updates(tr.w)
eta_eff = lr / n2[:-1]
g_unit = np.array([np.linalg.norm(loss_grad(w / np.linalg.norm(w), b)[1]) for w, b in zip(tr.w[:-1], batches)])
angle_resid = np.abs(np.tan(delta) - eta_eff * g_unit) / (eta_eff * g_unit)
print(f"effective lr {eta_eff[0]:.3f} -> {eta_eff[-1]:.3f};  max residual of the angle law: {angle_resid.max():.1e}")
assert angle_resid.max() <= 1e-12

# the library's claim rows make the same measurements (200 steps, their own batches)
for row in (D.norm_growth_claim("batch_norm"), D.effective_lr_claim("batch_norm")):
    print(f"{row.id}: measured {row.measured:.1e} (tolerance {row.tolerance:g})")
    assert row.passed and row.measured <= 1e-13

# %% [markdown]
# Only $\eta/\lVert w\rVert^2$ matters: starting from $3w_0$ with learning rate
# $9\eta$ gives the same directions at every step (and weights exactly 3 times
# larger), since $9\eta\,g(3w) = 9\eta\,g(w)/3 = 3\,\eta\,g(w)$.

# %%
tr3 = D.sgd(loss_grad, 3 * u0, lr=9 * lr, steps=steps, batches=batches)
same = np.linalg.norm(tr3.w - 3 * tr.w, axis=1) / np.linalg.norm(3 * tr.w, axis=1)
print(f"max ||w'_t - 3 w_t|| / ||3 w_t|| over {steps} steps: {same.max():.1e}")
assert same.max() <= 1e-12

# %% [markdown]
# ## Weight decay: spherical motion dynamics
#
# Add weight decay $\lambda$: $w_{t+1} = (1 - \eta\lambda)\,w_t - \eta\, g_t$.
# Still $g_t \perp w_t$, so
#
# $$\lVert w_{t+1}\rVert^2 = (1-\eta\lambda)^2 \lVert w_t\rVert^2 + \eta^2 \lVert g_t\rVert^2 .$$
#
# Decay shrinks the norm, the gradient grows it. With
# $\lVert g_t\rVert = C/\lVert w_t\rVert$ ($C = \lVert\nabla L(u)\rVert$, the
# gradient on the unit sphere) the fixed point $\lVert w_{t+1}\rVert = \lVert w_t\rVert = r^*$ solves
# $r^{*2}\big(1 - (1-\eta\lambda)^2\big) = \eta^2 C^2 / r^{*2}$:
#
# $$ r^{*4} = \frac{\eta\, C^2}{\lambda\,(2 - \eta\lambda)}, \qquad
#    \tan\Delta^* = \frac{\eta\, C}{(1-\eta\lambda)\, r^{*2}}
#    = \frac{\sqrt{\eta\lambda(2-\eta\lambda)}}{1-\eta\lambda}
#    = \sqrt{2\eta\lambda}\,\big(1 + O(\eta\lambda)\big). $$
#
# At equilibrium the weight moves on a sphere of fixed radius and turns by
# $\Delta^* \approx \sqrt{2\eta\lambda}$ per step, **independent of the loss**
# (Wan et al. 2021). With momentum $\mu$ (PyTorch: $v_t = \mu v_{t-1} + g_t + \lambda w_t$,
# $w_{t+1} = w_t - \eta v_t$) the same balance — the update carries each gradient
# with total weight $1/(1-\mu)$, its squared length with
# $\sum_k \mu^{2k} = 1/(1-\mu^2)$, and the cross terms
# $\langle w_t, g_{t-k}\rangle$ no longer vanish — gives, to first order in $\eta\lambda$
# and for gradients uncorrelated across steps,
#
# $$ r^{*4} \approx \frac{\eta\, C^2}{2\lambda(1-\mu)}, \qquad
#    \Delta^{*2} \approx \frac{\eta^2 C^2}{(1-\mu^2)\, r^{*4}} = \frac{2\eta\lambda}{1+\mu}. $$
#
# With stochastic batches $C$ fluctuates, and the prediction is for the
# root-mean-square angular update. `D.smd_run` runs 4000 steps of mini-batch SGD
# ($\eta = 0.1$, $\lambda = 0.02$, batches of 8 of 32) from a start rescaled to
# about the equilibrium norm; `D.angular_update_claim` compares the rms angle
# over the last 2500 steps with the prediction (tolerance 5%).

# %%
lr_wd, wd = 0.1, 0.02
runs, ratios = {}, {}
for mu in (0.0, 0.9):
    row = D.angular_update_claim(mu)          # defaults: lr 0.1, weight decay 0.02
    tr_mu, _, _ = D.smd_run(mu)               # the same (memoized) trajectory, for the figure
    runs[mu] = tr_mu
    ratios[mu] = row.measured / row.predicted
    print(f"mu = {mu}: rms angular update {row.measured:.5f}, predicted sqrt(2 lr wd/(1+mu)) = "
          f"{row.predicted:.5f} (ratio {ratios[mu]:.4f})")
    assert row.passed
    assert abs(row.predicted / math.sqrt(2 * lr_wd * wd / (1 + mu)) - 1) <= 1e-15
assert abs(ratios[0.0] - 1) <= 0.01           # within 1% without momentum
assert 0 < ratios[0.9] - 1 <= 0.03            # 1-2% high with momentum: a higher-order term in eta*lambda

# %% [markdown]
# The equilibrium norm itself. On the `"angle"` loss the sphere gradient has
# exactly constant norm $C$, so the norm recursion is deterministic and the
# fixed point $r^{*4} = \eta C^2/(\lambda(2-\eta\lambda))$ is reached to rounding;
# on the batch-norm problem the prediction with $C^2$ replaced by its average over
# the run holds to within a fraction of a percent.

# %%
row_angle = D.equilibrium_norm_claim()
row_bn = D.equilibrium_norm_average_claim()
for row in (row_angle, row_bn):
    print(f"{row.id}: predicted |w*|^4 = {row.predicted:.6g}, measured {row.measured:.6g}")
    assert row.passed
assert abs(row_angle.measured / row_angle.predicted - 1) <= 1e-10
assert abs(row_bn.measured / row_bn.predicted - 1) <= 0.01

# %% [markdown]
# ## Pictures
#
# Same problem, same start (unit norm) and the same mini-batches, $\eta = 0.1$.
# Without weight decay, squaring the norm law gives
# $r_{t+1}^4 = r_t^4 + 2\eta^2 C_t^2 + \eta^4 C_t^4/r_t^4$: the fourth power of
# the norm grows linearly, $r_t \sim t^{1/4}$, and the effective learning rate
# decays like $1/\sqrt t$. With $\lambda = 0.02$ the norm is pulled to the
# equilibrium radius $r^*$ (dashed, from the measured mean of $C^2$) within a few
# $1/(2\eta\lambda) = 250$ steps, and stays there.

# %%
steps_long = 4000
batches_long = D.random_batches(32, 8, steps_long, seed=2)
tr_free = D.sgd(loss_grad, u0, lr=lr_wd, steps=steps_long, batches=batches_long)
tr_wd = D.sgd(loss_grad, u0, lr=lr_wd, weight_decay=wd, steps=steps_long, batches=batches_long)
norm_free = np.linalg.norm(tr_free.w, axis=1)
norm_wd = np.linalg.norm(tr_wd.w, axis=1)

# predicted equilibrium radius from the sphere gradients of the second half of the run
late = range(steps_long // 2, steps_long)
C2 = np.mean([np.sum(loss_grad(tr_wd.w[t] / norm_wd[t], batches_long[t])[1] ** 2) for t in late])
r_star = (lr_wd * C2 / (wd * (2 - lr_wd * wd))) ** 0.25
print(f"without wd: ||w|| 1 -> {norm_free[-1]:.4f};  with wd: ||w|| -> {norm_wd[-1]:.4f} "
      f"(mean over the second half {norm_wd[steps_long // 2:].mean():.4f}, predicted r* = {r_star:.4f})")
assert np.all(np.diff(norm_free) > 0)
# r^4 grows by 2 eta^2 C_t^2 per step (plus a term of order eta^4 C^4), C_t = ||g_t|| ||w_t||
C2_free = np.sum(tr_free.g**2, axis=1) * norm_free[:-1] ** 2
r4_pred = 1.0 + 2 * lr_wd**2 * np.sum(C2_free)
print(f"without wd: ||w_T||^4 = {norm_free[-1] ** 4:.5f}, 1 + 2 eta^2 sum C_t^2 = {r4_pred:.5f}")
assert abs(norm_free[-1] ** 4 / r4_pred - 1) <= 1e-3
assert abs(np.mean(norm_wd[steps_long // 2:] ** 4) / r_star**4 - 1) <= 0.05

fig, ax = plt.subplots(figsize=(8, 4))
ax.plot(norm_free, label=r"SGD, $\lambda = 0$: $\|w_t\|$ grows")
ax.plot(norm_wd, label=rf"SGD, $\lambda = {wd}$")
ax.axhline(r_star, color="k", ls="--", lw=1, label=rf"equilibrium $r^* = {r_star:.3f}$")
ax.set_xlabel("step $t$")
ax.set_ylabel(r"$\|w_t\|$")
ax.set_title(rf"norm of a weight feeding batch norm ($\eta = {lr_wd}$, batches of 8/32)")
ax.legend()
show(fig)

# %% [markdown]
# The angle turned per step, $\Delta_t = \angle(w_t, w_{t+1})$, for the two
# `smd_run` trajectories (thin: every step; thick: rms over a window of 200 steps)
# against the predicted equilibrium $\sqrt{2\eta\lambda/(1+\mu)}$. Momentum
# makes every step longer (by up to $1/(1-\mu)$), yet at equilibrium the weight
# turns *more slowly*, by the factor $\sqrt{1+\mu}$: the norm grows until the
# effective learning rate compensates.

# %%
fig, ax = plt.subplots(figsize=(8, 4))
win = 200
for k, (mu, tr_mu) in enumerate(runs.items()):
    d_mu = D.angular_updates(tr_mu.w)
    rms = np.sqrt(np.convolve(d_mu**2, np.ones(win) / win, mode="valid"))
    pred = math.sqrt(2 * lr_wd * wd / (1 + mu))
    ax.plot(d_mu, color=f"C{k}", alpha=0.25, lw=0.5)
    ax.plot(np.arange(win - 1, d_mu.size), rms, color=f"C{k}", lw=2, label=rf"$\mu = {mu}$: rms over {win} steps")
    ax.axhline(pred, color=f"C{k}", ls="--", lw=1.2, label=rf"$\sqrt{{2\eta\lambda/(1+\mu)}} = {pred:.4f}$")
ax.set_ylim(0, 0.15)
ax.set_xlabel("step $t$")
ax.set_ylabel(r"angular update $\Delta_t$ (rad)")
ax.set_title(rf"spherical motion: $\eta = {lr_wd}$, $\lambda = {wd}$")
ax.legend(loc="upper right", fontsize=8)
show(fig)

# %% [markdown]
# ## Summary
#
# * A weight followed by normalization has a loss of degree 0:
#   $\nabla L(cw) = \nabla L(w)/c$, $\nabla L \perp w$, $Hw = -\nabla L$ — all
#   measured to ~1e-15 with normref.
# * Plain SGD on it grows the norm exactly by $\eta^2\lVert g\rVert^2$ per step
#   and turns the direction with the effective learning rate $\eta/\lVert w\rVert^2$,
#   which therefore decays on its own.
# * Weight decay stops the growth; at the equilibrium norm the weight turns by
#   $\sqrt{2\eta\lambda/(1+\mu)}$ per step whatever the loss. So for normalized
#   weights, $\eta\lambda$ (not $\eta$ alone) sets the speed of learning.
