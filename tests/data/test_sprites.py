import numpy as np
import pytest

from vin_jax.data import sprites

SETTINGS = dict(num_frames=48, height=16, width=16, num_sprites=1, sprite_size=4, max_speed=1.5, caption_detail=0)


def video(seed, **overrides):
  return sprites.generate_video(seed, **{**SETTINGS, **overrides})


def test_shapes_and_dtypes():
  v = video(0, num_sprites=3)
  assert v["frames"].shape == (48, 16, 16, 3) and v["frames"].dtype == np.uint8
  assert v["colors"].shape == (3,) and v["colors"].dtype == np.int32
  assert v["shapes"].shape == (3,) and v["shapes"].dtype == np.int32
  assert v["background"].shape == () and v["background"].dtype == np.int32
  assert v["trajectories"].shape == (3, 48, 2) and v["trajectories"].dtype == np.float32
  assert isinstance(v["caption"], str)
  assert len(set(v["colors"].tolist())) == 3  # identities are distinct while the palette allows


def test_deterministic_per_seed():
  a, b, c = video(7), video(7), video(8)
  for key in ("frames", "colors", "shapes", "background", "trajectories"):
    np.testing.assert_array_equal(a[key], b[key])
  assert a["caption"] == b["caption"]
  assert not np.array_equal(a["frames"], c["frames"])


@pytest.mark.parametrize("detail", [0, 1, 2])
def test_caption_hides_colours_unless_detail_2(detail):
  for seed in range(20):
    n = 1 + seed % 3
    v = video(seed, num_sprites=n, caption_detail=detail)
    words = v["caption"].replace("(", " ").replace(")", " ").replace(",", " ").split()
    colours = {sprites.COLOR_NAMES[c] for c in v["colors"]}
    shapes = {sprites.SHAPES[s] for s in v["shapes"]}
    background = sprites.BACKGROUND_NAMES[v["background"]]
    assert words[:4] == ["a", "video", "of", ["one", "two", "three"][n - 1]], v["caption"]
    if detail < 2:
      assert not any(name in v["caption"] for name in sprites.COLOR_NAMES), v["caption"]
      assert not any(name in words for name in sprites.BACKGROUND_NAMES), v["caption"]
    else:
      assert colours <= set(words) and background in words, v["caption"]
    assert (shapes <= set(words)) == (detail >= 1), v["caption"]


def test_captions():
  assert sprites.caption_for(np.array([0]), np.array([1]), 0, 0) == "a video of one sprite moving over a background"
  assert sprites.caption_for(np.array([0, 2]), np.array([1, 0]), 2, 1) == (
      "a video of two sprites (a disc and a square) moving over a background")
  assert sprites.caption_for(np.array([0, 2]), np.array([1, 0]), 2, 2) == (
      "a video of two sprites (a red disc and a blue square) moving over a navy background")


def test_sprites_move_smoothly_and_stay_in_frame():
  size, speed = SETTINGS["sprite_size"], SETTINGS["max_speed"]
  for seed in range(10):
    v = video(seed, num_sprites=2)
    traj = v["trajectories"]  # [n, T, 2]
    steps = np.linalg.norm(np.diff(traj, axis=1), axis=-1)
    assert steps.max() <= speed + 1e-4
    # Constant speed >= 0.3 * max_speed; only frames with a bounce are shorter.
    assert np.median(steps) >= 0.3 * speed - 1e-4
    assert traj.min() >= size / 2 - 1e-4 and traj[..., 0].max() <= 16 - size / 2 + 1e-4
    assert traj[..., 1].max() <= 16 - size / 2 + 1e-4


def test_drawn_sprite_follows_its_trajectory():
  for seed in range(5):
    v = video(seed)
    rgb = np.array(sprites.PALETTE[sprites.COLOR_NAMES[v["colors"][0]]])
    mask = sprites.shape_mask(sprites.SHAPES[v["shapes"][0]], SETTINGS["sprite_size"])
    covered = (v["frames"] == rgb).all(-1)  # [T, H, W]
    # The whole sprite is visible in every frame, and its bounding box centre is the trajectory, +-0.5 px.
    assert (covered.sum((1, 2)) == mask.sum()).all()
    for t in range(SETTINGS["num_frames"]):
      ys, xs = np.nonzero(covered[t])
      mys, mxs = np.nonzero(mask)
      centre = np.array([ys.min() - mys.min(), xs.min() - mxs.min()]) + SETTINGS["sprite_size"] / 2
      assert np.abs(centre - v["trajectories"][0, t]).max() <= 0.5 + 1e-4


def test_bounces_keep_moving():
  v = video(3, num_frames=400, max_speed=2.0)
  traj = v["trajectories"][0]
  # Over 400 frames at >= 0.6 px/frame the sprite crosses the 12 px range of centres: it must have bounced.
  assert np.ptp(traj[:, 0]) + np.ptp(traj[:, 1]) > 10


def test_shapes_differ_at_the_smallest_size():
  masks = [sprites.shape_mask(s, 3) for s in sprites.SHAPES]
  assert len({m.tobytes() for m in masks}) == len(sprites.SHAPES)


def test_errors_name_the_argument():
  with pytest.raises(ValueError, match="sprite_size=20"):
    video(0, sprite_size=20)
  with pytest.raises(ValueError, match="caption_detail=3"):
    video(0, caption_detail=3)


def test_hidden_sprites_leave_and_come_back_unchanged():
  plain, hidden = video(3, num_sprites=2), video(3, num_sprites=2, hide_frames=9)
  assert plain["visible"].all()
  for key in ("colors", "shapes", "background", "trajectories"):   # hiding draws nothing else differently
    np.testing.assert_array_equal(plain[key], hidden[key])
  vis = hidden["visible"]
  assert vis.shape == (2, 48) and vis[:, 0].all() and (vis.sum(axis=1) == 48 - 9).all()
  for k in range(2):   # one run of 9 hidden frames, then the sprite is drawn where its trajectory is again
    gone = np.flatnonzero(~vis[k])
    assert gone[-1] - gone[0] == 8
  background = np.array(sprites.BACKGROUNDS[sprites.BACKGROUND_NAMES[hidden["background"]]], np.uint8)
  both_gone = ~vis.any(axis=0)
  assert (hidden["frames"][both_gone] == background).all()
  shown = vis.all(axis=0)
  np.testing.assert_array_equal(hidden["frames"][shown], plain["frames"][shown])
  with pytest.raises(ValueError, match="hide_frames"):
    video(0, hide_frames=48)
