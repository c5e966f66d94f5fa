"""The one schedule interface: noising, targets, inversion and the sampler step for eps, v and flow."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vin_jax.diffusion.schedules import Schedule

SCHEDULES = [("eps", "cosine"), ("eps", "linear"), ("v", "cosine"), ("v", "linear"), ("flow", "cosine")]
SHAPE = (2, 3, 4, 2, 2, 3)   # [B, N, F, h, w, c]


def draws(seed=0):
  k0, k1, k2 = jax.random.split(jax.random.key(seed), 3)
  x0 = jax.random.normal(k0, SHAPE)
  noise = jax.random.normal(k1, SHAPE)
  t = jax.random.uniform(k2, SHAPE[:3], minval=0.05, maxval=0.95)   # one time per frame
  return x0, noise, t


@pytest.mark.parametrize("objective,schedule", SCHEDULES)
def test_prediction_of_the_exact_target_recovers_x0_and_noise(objective, schedule):
  s = Schedule(objective, schedule)
  x0, noise, t = draws()
  x_t = s.add_noise(x0, noise, t)
  x0_hat, eps_hat = s.x0_eps(x_t, s.target(x0, noise, t), t)
  np.testing.assert_allclose(x0_hat, x0, atol=1e-4)
  np.testing.assert_allclose(eps_hat, noise, atol=1e-4)


@pytest.mark.parametrize("objective,schedule", SCHEDULES)
def test_target_from_the_true_x0_is_the_target(objective, schedule):
  # An "x0" network output that is exactly right gives exactly the objective's target (t in [0.05, 0.95]).
  s = Schedule(objective, schedule)
  x0, noise, t = draws(2)
  x_t = s.add_noise(x0, noise, t)
  min_sigma = 0.9 * float(jnp.min(s.alpha_sigma(t)[1]))   # below every frame's sigma: no clamping
  np.testing.assert_allclose(s.target_from_x0(x_t, x0, t, min_sigma), s.target(x0, noise, t), atol=1e-3,
                             rtol=1e-4)


def test_target_from_x0_is_finite_at_t_zero_and_flow_is_the_velocity():
  s = Schedule("flow")
  x0, noise, _ = draws(3)
  t = jnp.zeros(SHAPE[:3]).at[:, :, 0].set(0.5)
  x_t = s.add_noise(x0, noise, t)
  x0_hat = x0 + 0.1
  target = s.target_from_x0(x_t, x0_hat, t, min_sigma=0.05)
  assert np.all(np.isfinite(target))
  # flow: (x_t - x0_hat) / max(t, min_sigma)
  np.testing.assert_allclose(target[:, :, 0], (x_t[:, :, 0] - x0_hat[:, :, 0]) / 0.5, atol=1e-5)
  np.testing.assert_allclose(target[:, :, 1:], (x_t[:, :, 1:] - x0_hat[:, :, 1:]) / 0.05, atol=1e-4)


@pytest.mark.parametrize("objective,schedule", SCHEDULES)
def test_alpha_sigma(objective, schedule):
  s = Schedule(objective, schedule)
  alpha, sigma = s.alpha_sigma(jnp.float32(0.0))
  np.testing.assert_allclose([alpha, sigma], [1.0, 0.0], atol=1e-6)
  t = jnp.linspace(0.0, 1.0, 101)
  alpha, sigma = s.alpha_sigma(t)
  assert np.all(np.diff(alpha) <= 1e-7) and np.all(np.diff(sigma) >= -1e-7)   # noise grows with t
  if objective == "flow":
    np.testing.assert_allclose(alpha + sigma, 1.0, atol=1e-6)
    np.testing.assert_allclose([alpha[-1], sigma[-1]], [0.0, 1.0], atol=1e-6)
  else:  # variance preserving; nearly pure noise at t = 1
    np.testing.assert_allclose(alpha ** 2 + sigma ** 2, 1.0, atol=1e-5)
    assert alpha[-1] < 0.02 and alpha[-1] > 0


@pytest.mark.parametrize("objective,schedule", SCHEDULES)
def test_step_with_the_exact_target_lands_on_the_next_noise_level(objective, schedule):
  # DDIM (eta = 0) for eps / v, Euler for flow: with the true target the step is exact.
  s = Schedule(objective, schedule)
  x0, noise, t = draws(1)
  t_next = t - 0.04
  x_t = s.add_noise(x0, noise, t)
  x_next = s.step(x_t, s.target(x0, noise, t), t, t_next)
  np.testing.assert_allclose(x_next, s.add_noise(x0, noise, t_next), atol=1e-4)


@pytest.mark.parametrize("objective,schedule", SCHEDULES)
def test_full_chain_with_the_exact_target_ends_on_x0(objective, schedule):
  s = Schedule(objective, schedule)
  x0, noise, _ = draws(2)
  ts = s.timesteps(10)
  x = noise if objective == "flow" else s.add_noise(x0, noise, ts[0])
  for i in range(10):
    x = s.step(x, s.target(x0, noise, ts[i]), ts[i], ts[i + 1])
  np.testing.assert_allclose(x, x0, atol=2e-4)


def test_flow_step_is_euler():
  s = Schedule("flow")
  x0, noise, t = draws(3)
  x_t = s.add_noise(x0, noise, t)
  pred = jax.random.normal(jax.random.key(9), SHAPE)   # any velocity, not only the exact one
  t_next = t - 0.1
  expected = x_t + (t_next - t)[..., None, None, None] * pred
  np.testing.assert_allclose(s.step(x_t, pred, t, t_next), expected, atol=1e-5)


def test_per_frame_times_broadcast_over_the_frame():
  s = Schedule("eps", "cosine")
  x0, noise, t = draws(4)
  x_t = s.add_noise(x0, noise, t)
  assert x_t.shape == SHAPE
  for b, n, f in [(0, 0, 0), (1, 2, 3), (0, 1, 2)]:
    one = s.add_noise(x0[b, n, f], noise[b, n, f], t[b, n, f])   # a scalar time for one frame
    np.testing.assert_allclose(x_t[b, n, f], one, atol=1e-6)
  # A time of 0 leaves the frame clean (clean-frame conditioning).
  x_t = s.add_noise(x0, noise, t.at[:, 0].set(0.0))
  np.testing.assert_allclose(x_t[:, 0], x0[:, 0], atol=1e-6)
  # A per-row time [B] broadcasts too.
  t_B = jnp.array([0.2, 0.7])
  np.testing.assert_allclose(s.add_noise(x0, noise, t_B)[1], s.add_noise(x0[1], noise[1], t_B[1]), atol=1e-6)


@pytest.mark.parametrize("objective", ["eps", "v", "flow"])
def test_sample_t(objective):
  s = Schedule(objective, logit_normal_mean=0.5, logit_normal_std=1.0)
  t = np.asarray(s.sample_t(jax.random.key(0), (20000,)))
  assert t.shape == (20000,)
  assert np.all(t > 0) and np.all(t < 1)
  if objective == "flow":   # logit-normal: the logit is N(mean, std)
    np.testing.assert_allclose(np.median(t), jax.nn.sigmoid(0.5), atol=0.01)
    logit = np.log(t / (1 - t))
    np.testing.assert_allclose([logit.mean(), logit.std()], [0.5, 1.0], atol=0.03)
  else:                     # uniform
    np.testing.assert_allclose([t.mean(), np.median(t)], [0.5, 0.5], atol=0.01)


@pytest.mark.parametrize("objective,schedule", SCHEDULES)
def test_timesteps(objective, schedule):
  s = Schedule(objective, schedule)
  ts = np.asarray(s.timesteps(50))
  assert ts.shape == (51,)
  assert ts[0] == np.float32(s.max_time()) and ts[-1] == 0.0
  assert np.all(np.diff(ts) < 0)
  np.testing.assert_allclose(np.diff(ts), -s.max_time() / 50, atol=1e-6)
  alpha, _ = s.alpha_sigma(jnp.asarray(ts[0]))
  assert float(alpha) <= 0.0101   # the chain still starts from (almost) pure noise


@pytest.mark.parametrize("num_steps", [10, 50])
@pytest.mark.parametrize("objective,schedule", SCHEDULES)
def test_every_sampling_step_changes_x(objective, schedule, num_steps):
  """No step of the grid is a no-op: the linear eps schedule's alpha_bar is clamped from t ~ 0.957, so a grid
  from t = 1 made its first 2 of 50 DDIM steps return x unchanged."""
  s = Schedule(objective, schedule)
  ts = s.timesteps(num_steps)
  x = jax.random.normal(jax.random.key(0), SHAPE)
  pred = jax.random.normal(jax.random.key(1), SHAPE)
  for i in range(num_steps):
    x_next = s.step(x, pred, ts[i], ts[i + 1])
    assert float(jnp.max(jnp.abs(x_next - x))) > 1e-4, (i, float(ts[i]), float(ts[i + 1]))
    x = x_next


def test_invalid_objective_and_schedule():
  with pytest.raises(ValueError, match="diffusion.objective"):
    Schedule("x0")
  with pytest.raises(ValueError, match="diffusion.schedule"):
    Schedule("eps", "sigmoid")
