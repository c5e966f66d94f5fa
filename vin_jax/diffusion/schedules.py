"""One schedule interface for eps (DDPM), v and flow (rectified flow) objectives.

Continuous time t in [0, 1]: t = 0 is clean data, t = 1 is (almost) pure noise. x_t = alpha(t) x0 + sigma(t) eps.
Sampling takes `step(x_t, pred, t, t_next) = alpha(t_next) x0_hat + sigma(t_next) eps_hat`, which is DDIM
(eta = 0) for eps and v, and exactly the Euler step of the flow ODE for `flow`. The sampler never asks which.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_MIN_ALPHA_BAR = 1e-4   # keeps eps -> x0 finite at t = 1 for the VP schedules


def _expand(t, x):
  """Per-frame times t [B, N, F] (or [B]) broadcast against x [B, N, F, h, w, c]."""
  t = jnp.asarray(t, jnp.float32)
  return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


class Schedule:

  def __init__(self, objective: str = "flow", schedule: str = "cosine", logit_normal_mean: float = 0.0,
               logit_normal_std: float = 1.0, t_sampling: str = "default"):
    if objective not in ("eps", "v", "flow"):
      raise ValueError(f"diffusion.objective={objective!r} must be 'eps', 'v' or 'flow'")
    if schedule not in ("cosine", "linear"):
      raise ValueError(f"diffusion.schedule={schedule!r} must be 'cosine' or 'linear'")
    self.objective, self.schedule = objective, schedule
    if t_sampling not in ("default", "uniform", "logit_normal"):
      raise ValueError(f"diffusion.t_sampling={t_sampling!r} must be 'default', 'uniform' or 'logit_normal'")
    self.mean, self.std = logit_normal_mean, logit_normal_std
    # default: logit-normal for flow (STIV / SD3), uniform for eps and v
    self.t_sampling = t_sampling if t_sampling != "default" else ("logit_normal" if objective == "flow" else "uniform")

  @classmethod
  def from_config(cls, config) -> "Schedule":
    d = config.diffusion
    return cls(d.objective, d.schedule, d.logit_normal_mean, d.logit_normal_std, d.t_sampling)

  def key(self) -> tuple:
    """Hashable identity (for caches of compiled samplers)."""
    return (self.objective, self.schedule, self.mean, self.std, self.t_sampling)

  @staticmethod
  def expand(t, x):
    return _expand(t, x)

  def alpha_sigma(self, t):
    if self.objective == "flow":
      return 1.0 - t, t
    if self.schedule == "cosine":
      s = 0.008
      alpha_bar = (jnp.cos((t + s) / (1 + s) * math.pi / 2) / math.cos(s / (1 + s) * math.pi / 2)) ** 2
    else:  # the continuous form of DDPM's linear betas 1e-4 .. 0.02 over 1000 steps
      alpha_bar = jnp.exp(-(0.1 * t + 0.5 * (20.0 - 0.1) * t ** 2))
    alpha_bar = jnp.clip(alpha_bar, _MIN_ALPHA_BAR, 1.0)
    return jnp.sqrt(alpha_bar), jnp.sqrt(1.0 - alpha_bar)

  def sample_t(self, rng, shape):
    """Training times in (0, 1) (see `t_sampling`)."""
    if self.t_sampling == "logit_normal":
      return jax.nn.sigmoid(self.mean + self.std * jax.random.normal(rng, shape))
    return jax.random.uniform(rng, shape, minval=1e-3, maxval=1.0)

  def add_noise(self, x0, noise, t):
    alpha, sigma = self.alpha_sigma(_expand(t, x0))
    return alpha * x0 + sigma * noise

  def target(self, x0, noise, t):
    if self.objective == "eps":
      return noise
    if self.objective == "flow":
      return noise - x0
    alpha, sigma = self.alpha_sigma(_expand(t, x0))
    return alpha * noise - sigma * x0

  def target_coefficients(self, t):
    """(a, b) with target = a * eps + b * x0."""
    if self.objective == "eps":
      return jnp.ones_like(t), jnp.zeros_like(t)
    if self.objective == "flow":
      return jnp.ones_like(t), -jnp.ones_like(t)
    alpha, sigma = self.alpha_sigma(t)
    return alpha, -sigma

  def input_skip(self, t, sigma_data: float = 1.0):
    """The best linear guess of the target from x_t alone, as a coefficient on x_t (EDM's c_skip, for any
    objective): Cov(target, x_t) / Var(x_t) with unit noise and data of std `sigma_data`. The network
    then predicts only the residual; without it, a small net must copy the noise through itself at t ~ 1."""
    alpha, sigma = self.alpha_sigma(t)
    a, b = self.target_coefficients(t)
    var_data = sigma_data ** 2
    return (a * sigma + b * alpha * var_data) / (alpha ** 2 * var_data + sigma ** 2)

  def target_from_x0(self, x_t, x0_hat, t, min_sigma: float = 0.05):
    """The objective's target implied by a clean-data estimate (an "x0" network output, as in JiT:
    Li & He 2025): with eps_hat = (x_t - alpha x0_hat) / sigma, target = a eps_hat + b x0_hat. sigma is
    clamped at `min_sigma` so t -> 0 stays finite (flow: target = (x_t - x0_hat) / max(t, min_sigma))."""
    tt = _expand(t, x_t)
    if self.objective == "flow":
      return (x_t - x0_hat) / jnp.maximum(tt, min_sigma)
    alpha, sigma = self.alpha_sigma(tt)
    a, b = self.target_coefficients(tt)
    eps_hat = (x_t - alpha * x0_hat) / jnp.maximum(sigma, min_sigma)
    return a * eps_hat + b * x0_hat

  def x0_eps(self, x_t, pred, t):
    """Prediction -> (x0_hat, eps_hat)."""
    tt = _expand(t, x_t)
    if self.objective == "flow":
      return x_t - tt * pred, x_t + (1.0 - tt) * pred
    alpha, sigma = self.alpha_sigma(tt)
    if self.objective == "eps":
      return (x_t - sigma * pred) / alpha, pred
    return alpha * x_t - sigma * pred, sigma * x_t + alpha * pred

  def step(self, x_t, pred, t, t_next):
    x0, eps = self.x0_eps(x_t, pred, t)
    alpha, sigma = self.alpha_sigma(_expand(t_next, x_t))
    return alpha * x0 + sigma * eps

  def max_time(self) -> float:
    """The largest informative time: where the VP schedules' alpha_bar reaches its clamp `_MIN_ALPHA_BAR`
    (linear: t ~ 0.957, cosine: t ~ 0.994), 1.0 for flow. Every time above it is the same noise level, so
    a sampling grid that started at 1 would spend its first steps as exact no-ops (DDIM from one alpha_bar
    to the same alpha_bar returns x unchanged)."""
    if self.objective == "flow":
      return 1.0
    if self.schedule == "cosine":
      s = 0.008
      c = math.sqrt(_MIN_ALPHA_BAR) * math.cos(s / (1 + s) * math.pi / 2)
      t = (1 + s) * math.acos(c) * 2 / math.pi - s
    else:  # 0.1 t + 9.95 t^2 = -log(_MIN_ALPHA_BAR)
      a, b, c = 0.5 * (20.0 - 0.1), 0.1, -math.log(_MIN_ALPHA_BAR)
      t = (-b + math.sqrt(b * b + 4 * a * c)) / (2 * a)
    # Just below the clamp point, so the first step's alpha_bar is (in fp32) above the clamp.
    return min(1.0, t * (1.0 - 1e-6))

  def timesteps(self, num_steps: int):
    """[num_steps + 1] times from `max_time()` down to 0, evenly spaced; step s (num_steps .. 1) goes
    ts[S-s] -> ts[S-s+1]. The sampler starts from unit noise at ts[0]: alpha(ts[0]) <= 0.01 for eps / v."""
    return jnp.linspace(self.max_time(), 0.0, num_steps + 1)
