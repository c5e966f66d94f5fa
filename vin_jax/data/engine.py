"""The data engine of the `video_folder` builder (after STIV's): what turns a folder of footage into clips.

For each video, decoded by ffmpeg already resampled to `fps` and resized/cropped to height x width:

1. Scene cuts (`split_scenes`): PySceneDetect's `ContentDetector` (threshold `scene_threshold`, every cut
   honoured: min_scene_len=0) runs on the decoded frames, streaming. Clips are the non-overlapping
   `num_frames` clips *within* each scene, so no clip crosses a cut; the frames a scene leaves after its last
   whole clip are dropped ("scene_tail"; at the end of the video "tail").
2. Motion (`min_motion`): each clip's mean Farneback optical-flow magnitude between consecutive frames, on
   grayscale frames (at most MOTION_SIZE pixels on the short side), in pixels per frame at the clip's
   resolution. Clips below `min_motion` are dropped ("static"); the score of kept clips is stored as `motion`.
3. Captions: an index `captions_file` (.jsonl: {"path": ..., "caption": ...} per line; .csv: header
   path,caption), paths relative to the video folder, wins over a video's sidecar `<stem>.txt`.
4. Broken files never stop a build: a file ffmpeg cannot open is skipped; a file whose decoding breaks off
   (an error mid-stream, or far fewer frames than its container's duration promises) is truncated: the clips
   before the break are kept, except the last, which may hold the break's damaged frames. Both are listed
   in the `BuildReport` (`build_report.json` in the builder's data dir, next to the records).
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import logging
import pathlib
import re
from fractions import Fraction
from typing import Iterator, NamedTuple

import numpy as np

REPORT_NAME = "build_report.json"
DEFAULT_SCENE_THRESHOLD = 27.0   # ContentDetector's default
MOTION_SIZE = 64                 # optical flow runs on frames at most this many pixels on the short side
# A video that decodes to fewer than this fraction of the frames its container's duration promises (at fps)
# is truncated. Not 1: the container's duration is that of its longest stream (audio may outlast the video).
TRUNCATION_FRACTION = 0.9
DROP_REASONS = ("static", "tail", "scene_tail", "truncated")

# "Detecting scenes..." and friends at INFO for every video would drown the build's own output.
logging.getLogger("pyscenedetect").setLevel(logging.WARNING)


def check_settings(*, scene_threshold: float, min_motion: float, captions_file: str) -> None:
  """Raises ValueError naming the `data.*` field of a setting that cannot work."""
  if not float(scene_threshold) > 0:
    raise ValueError(f"data.scene_threshold={scene_threshold!r} must be > 0 (ContentDetector's default is 27)")
  if not float(min_motion) >= 0:
    raise ValueError(f"data.min_motion={min_motion!r} must be >= 0 (0 keeps every clip)")
  if captions_file:
    if pathlib.Path(captions_file).suffix.lower() not in (".jsonl", ".csv"):
      raise ValueError(f"data.captions_file={captions_file!r} must be a .jsonl or .csv file")
    if not pathlib.Path(captions_file).is_file():
      raise FileNotFoundError(f"data.captions_file={captions_file!r} is not a file")


def captions_digest(captions_file: str) -> str:
  """What the builder config's name digests of a captions index: its path and contents."""
  if not captions_file:
    return "captions:"
  path = pathlib.Path(captions_file).resolve()
  return f"captions:{path}:{hashlib.sha1(path.read_bytes()).hexdigest()}"


# ----------------------------------------------------------------------------------------------
# Captions index.

def _index_error(path, line: int, problem: str) -> ValueError:
  return ValueError(f"data.captions_file={str(path)!r}, line {line}: {problem}")


def _normalised(raw: str, root: pathlib.Path | None) -> str:
  """A video path of an index as a key: posix, relative to the folder, without './'."""
  text = raw.strip().replace("\\", "/")
  if root is not None and pathlib.PurePosixPath(text).is_absolute():
    try:
      text = pathlib.Path(text).resolve().relative_to(root).as_posix()
    except ValueError:
      pass  # outside the folder: matches no video
  return pathlib.PurePosixPath(text).as_posix().removeprefix("./")


def load_captions(captions_file: str | pathlib.Path, root: str | pathlib.Path | None = None) -> dict[str, str]:
  """{relative posix path: caption} of a captions index; a malformed one raises a ValueError naming the
  file and line. Blank lines are skipped; a path given twice is an error."""
  path = pathlib.Path(captions_file)
  root = pathlib.Path(root).resolve() if root is not None else None
  data = path.read_bytes()
  try:
    text = data.decode("utf-8-sig")
  except UnicodeDecodeError as error:
    raise _index_error(path, data[:error.start].count(b"\n") + 1, "not UTF-8 text") from error
  captions: dict[str, str] = {}
  lines: dict[str, int] = {}

  def add(line, video, caption):
    if not isinstance(video, str) or not video.strip():
      raise _index_error(path, line, f"'path' must be a non-empty string, got {video!r}")
    if not isinstance(caption, str):
      raise _index_error(path, line, f"'caption' must be a string, got {caption!r}")
    key = _normalised(video, root)
    if key in captions:
      raise _index_error(path, line, f"{key!r} already has a caption, on line {lines[key]}")
    captions[key], lines[key] = caption.strip(), line

  suffix = path.suffix.lower()
  if suffix == ".jsonl":
    for number, line in enumerate(text.splitlines(), start=1):
      if not line.strip():
        continue
      try:
        entry = json.loads(line)
      except json.JSONDecodeError as error:
        raise _index_error(path, number, f"not JSON ({error.msg})") from error
      if not isinstance(entry, dict) or not {"path", "caption"} <= entry.keys():
        raise _index_error(path, number, 'want an object {"path": ..., "caption": ...}, got ' + line.strip()[:80])
      add(number, entry["path"], entry["caption"])
  elif suffix == ".csv":
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
      header = next(reader, None)
      if header is None or [h.strip().lower() for h in header] != ["path", "caption"]:
        raise _index_error(path, 1, f"the header must be 'path,caption', got {','.join(header or [])!r}")
      for row in reader:
        if not any(field.strip() for field in row):
          continue
        if len(row) != 2:
          raise _index_error(path, reader.line_num, f"want 2 fields (path,caption), got {len(row)}: {row!r}")
        add(reader.line_num, row[0], row[1])
    except csv.Error as error:
      raise _index_error(path, reader.line_num, f"not CSV ({error})") from error
  else:
    raise ValueError(f"data.captions_file={str(path)!r} must be a .jsonl or .csv file")
  return captions


def caption_of(video: pathlib.Path, root: pathlib.Path, index: dict[str, str] | None) -> tuple[str, str]:
  """(caption, where from: "index" | "sidecar" | "none") of a video; the index wins over the sidecar."""
  key = video.relative_to(root).as_posix()
  if index and key in index:
    return index[key], "index"
  sidecar = video.with_suffix(".txt")
  if sidecar.exists():
    return sidecar.read_text(encoding="utf-8").strip(), "sidecar"
  return "", "none"


# ----------------------------------------------------------------------------------------------
# Decoding, scenes, motion.

class DecodeFailure(NamedTuple):
  error: str        # short: ffmpeg's last words, not its banner
  opened: bool      # False: nothing was decoded (the file is skipped); True: decoding broke off


def short_error(error: BaseException) -> str:
  """One line of an imageio-ffmpeg error: its first line and the last lines ffmpeg wrote (no banner)."""
  text = str(error)
  head, _, stderr = text.partition("=== stderr ===")
  lines = [re.sub(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*", "", l.strip()) for l in stderr.splitlines()]
  # Not the banner, nor the lines that only name the file ("Error opening input file x.mp4.").
  ignored = ("ffmpeg version", "built with", "configuration:", "lib", "Error opening input file")
  lines = [l for l in lines if l and not l.startswith(ignored)]
  first = head.strip().splitlines()[0] if head.strip() else type(error).__name__
  tail = list(dict.fromkeys(lines))[-2:]
  return "; ".join([first, *tail])[:300]


def decoded_frames(path: pathlib.Path, height: int, width: int, fps: float, meta: dict | None = None):
  """Streams uint8 [H, W, 3] frames of a video resampled to `fps`, scaled to cover H x W and centre-cropped.

  The source's metadata (ffmpeg's header: fps, size, duration) goes into `meta` if given. Raises ValueError
  when ffmpeg cannot open the file, RuntimeError when decoding breaks off.
  """
  import imageio_ffmpeg  # only this builder decodes video

  # ffmpeg does the resampling and resizing while decoding, so a long video never sits in memory.
  filters = (f"fps={fps!r},scale={width}:{height}:force_original_aspect_ratio=increase:flags=area,"
             f"crop={width}:{height}")
  reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", output_params=["-vf", filters])
  try:
    try:
      header = next(reader)
    except (OSError, RuntimeError, ValueError, KeyError, IndexError, StopIteration) as error:
      raise ValueError(f"cannot decode video {str(path)!r}: {short_error(error)}") from error
    if meta is not None:
      meta.update(header)
    for buffer in reader:
      if len(buffer) != height * width * 3:
        raise RuntimeError(f"frame of {len(buffer)} bytes, want {height * width * 3}")
      yield np.frombuffer(buffer, np.uint8).reshape(height, width, 3)
  finally:
    reader.close()  # stops ffmpeg now, also when the caller stops early


def motion_score(frames: np.ndarray) -> float:
  """Mean optical-flow magnitude of uint8 [T, H, W, 3] RGB frames, in pixels per frame at H x W.

  Farneback flow between consecutive grayscale frames, downscaled so the short side is at most MOTION_SIZE
  (the flow is scaled back to H x W pixels). 0 for a still clip (or a single frame).
  """
  import cv2

  frames = np.asarray(frames)
  t, h, w = frames.shape[:3]
  if t < 2:
    return 0.0
  scale = min(1.0, MOTION_SIZE / min(h, w))
  size = (max(1, round(w * scale)), max(1, round(h * scale)))  # cv2: (width, height)
  gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
  if scale < 1.0:
    gray = [cv2.resize(g, size, interpolation=cv2.INTER_AREA) for g in gray]
  to_pixels = np.array([w / size[0], h / size[1]], np.float32)  # flow (dx, dy) at the clip's resolution
  magnitudes = []
  for previous, current in zip(gray, gray[1:]):
    flow = cv2.calcOpticalFlowFarneback(previous, current, None, pyr_scale=0.5, levels=3, winsize=15,
                                        iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
    magnitudes.append(float(np.linalg.norm(flow * to_pixels, axis=-1).mean()))
  return float(np.mean(magnitudes))


class SceneCuts:
  """Streaming ContentDetector: `is_cut(i, frame)` says whether frame i (RGB) starts a new scene."""

  def __init__(self, threshold: float, fps: float):
    from scenedetect.detectors import ContentDetector
    # min_scene_len=0: every cut counts at once (a longer minimum would let clips cross the cuts it hides).
    self._detector = ContentDetector(threshold=float(threshold), min_scene_len=0)
    self._fps = Fraction(fps).limit_denominator(1001)

  def is_cut(self, index: int, frame: np.ndarray) -> bool:
    from scenedetect import FrameTimecode
    bgr = np.ascontiguousarray(frame[..., ::-1])
    cuts = self._detector.process_frame(FrameTimecode(index, fps=self._fps), bgr)
    return index > 0 and bool(cuts)


# ----------------------------------------------------------------------------------------------
# Clips and the report.

class Clip(NamedTuple):
  start_frame: int      # first frame, at fps, in the video
  frames: np.ndarray    # uint8 [num_frames, H, W, 3]
  motion: float         # motion_score(frames)


@dataclasses.dataclass
class SplitReport:
  """What the clips of one split's videos came to."""
  files: int = 0                      # videos listed for the split
  clips_kept: int = 0
  dropped: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
  scene_cuts: int = 0
  skipped: list = dataclasses.field(default_factory=list)    # [{"file", "error"}]: no clip taken
  truncated: list = dataclasses.field(default_factory=list)  # [{"file", "error", "clips_kept"}]
  motion: list = dataclasses.field(default_factory=list)     # scores of every whole clip (kept or static)
  captions: dict = dataclasses.field(default_factory=lambda: {"index": 0, "sidecar": 0, "none": 0})

  def as_json(self) -> dict:
    out = dataclasses.asdict(self)
    scores = np.asarray(out.pop("motion"), np.float64)
    out["motion_quantiles"] = ({q: round(float(np.quantile(scores, float(q))), 4)
                                for q in ("0.0", "0.1", "0.5", "0.9", "1.0")} if scores.size else {})
    return out


def clips(path: pathlib.Path, *, num_frames: int, height: int, width: int, fps: float, split_scenes: bool,
          scene_threshold: float, min_motion: float, report: SplitReport | None = None,
          name: str | None = None) -> Iterator[Clip]:
  """Streams the kept clips of one video (see the module's docstring); counts what it drops in `report`.

  Never raises for a broken file: it is recorded in `report` (if given) as skipped or truncated.
  """
  report = report if report is not None else SplitReport()
  name = name or path.name
  detector = SceneCuts(scene_threshold, fps) if split_scenes else None
  meta: dict = {}
  failure: list[DecodeFailure] = []

  def frames():
    try:
      yield from decoded_frames(path, height, width, fps, meta)
    except Exception as error:  # whatever ffmpeg makes of a broken file; never the clip logic below
      failure.append(DecodeFailure(short_error(error.__cause__ or error), opened=bool(meta)))

  held: Clip | None = None   # the last kept clip waits for the next one: dropped if decoding then breaks off
  kept, buffer, start, decoded = 0, [], 0, 0
  with contextlib.closing(frames()) as stream:  # stops ffmpeg also when the caller stops early
    for index, frame in enumerate(stream):
      decoded = index + 1
      if detector is not None and detector.is_cut(index, frame):
        report.scene_cuts += 1
        if buffer:
          report.dropped["scene_tail"] += 1
        buffer, start = [], index
      buffer.append(frame)
      if len(buffer) < num_frames:
        continue
      stacked = np.stack(buffer)
      clip = Clip(start, stacked, motion_score(stacked))
      report.motion.append(clip.motion)
      buffer, start = [], start + num_frames
      if clip.motion < min_motion:
        report.dropped["static"] += 1
        continue
      if held is not None:
        kept += 1
        report.clips_kept += 1
        yield held
      held = clip

  if not failure and meta.get("duration"):
    expected = float(meta["duration"]) * fps
    if decoded < TRUNCATION_FRACTION * expected - 1:
      failure.append(DecodeFailure(
          f"decoded {decoded} frames at fps={fps!r}, but its duration of {float(meta['duration']):.2f} s "
          f"promises ~{expected:.0f}: truncated", opened=True))
  if failure and not failure[0].opened:
    report.skipped.append({"file": name, "error": failure[0].error})
    return
  if failure:
    report.dropped["truncated"] += int(held is not None) + int(bool(buffer))
    report.truncated.append({"file": name, "error": failure[0].error, "clips_kept": kept})
    return
  if buffer:
    report.dropped["tail"] += 1
  if held is not None:
    report.clips_kept += 1
    yield held


@dataclasses.dataclass
class BuildReport:
  """The build's account: per split, and the settings it ran with; `write` puts it in `data_dir`."""
  settings: dict
  splits: dict = dataclasses.field(default_factory=dict)   # split name -> SplitReport
  captions_unmatched: list = dataclasses.field(default_factory=list)  # index paths naming no listed video

  def split(self, name: str) -> SplitReport:
    return self.splits.setdefault(name, SplitReport())

  def totals(self) -> dict:
    parts = list(self.splits.values())
    return {"clips_kept": sum(p.clips_kept for p in parts),
            "dropped": {r: sum(p.dropped[r] for p in parts) for r in DROP_REASONS},
            "scene_cuts": sum(p.scene_cuts for p in parts),
            "files": sum(p.files for p in parts),
            "skipped": [s for p in parts for s in p.skipped],
            "truncated": [s for p in parts for s in p.truncated]}

  def as_json(self) -> dict:
    return {"settings": self.settings, "total": self.totals(),
            "splits": {k: v.as_json() for k, v in self.splits.items()},
            "captions_unmatched": self.captions_unmatched}

  def write(self, data_dir) -> pathlib.Path:
    path = pathlib.Path(data_dir) / REPORT_NAME
    path.write_text(json.dumps(self.as_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path

  def summary(self) -> str:
    """One line: clips kept (per split), dropped by reason, files skipped and truncated with their errors."""
    t = self.totals()
    per_split = ", ".join(f"{k} {v.clips_kept}" for k, v in self.splits.items())
    dropped = ", ".join(f"{r} {n}" for r, n in t["dropped"].items())
    line = (f"video_folder: {t['clips_kept']} clips kept ({per_split}) from {t['files']} files; dropped: "
            f"{dropped}; {t['scene_cuts']} scene cuts; {len(t['skipped'])} files skipped")
    if t["skipped"]:
      line += " (" + "; ".join(f"{s['file']}: {s['error']}" for s in t["skipped"]) + ")"
    line += f"; {len(t['truncated'])} truncated"
    if t["truncated"]:
      line += " (" + "; ".join(f"{s['file']}: kept {s['clips_kept']} clips, {s['error']}"
                               for s in t["truncated"]) + ")"
    return line
