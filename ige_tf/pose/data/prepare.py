"""Human3.6M (either layout) -> TFRecord shards, manifest and statistics.

`prepare_h36m` writes, under `out_dir`, through
`ige_tf.data.record_writer.RecordWriter` (settings guard, atomic shards and
sidecars, resume, manifest schema):

  parameters.json         the settings; a rerun with other settings refuses
                          (directories of the previous version hold
                          `prepare_config.json`, read in its place)
  train/<S>-<Sequence>.tfrecord   one shard per (subject, sequence), all
  test/<S>-<Sequence>.tfrecord    cameras; schema in `records.py` (a
                          sequence without usable frames: an empty shard)
  <split>/<shard>.json    the shard's sidecar: num_examples, the shard check
                          (examples, bytes, sha256), and here subject,
                          sequence, action, cameras, skips, notes and the
                          statistics sums; its presence marks the shard
                          finished (resume verifies the check)
  manifest.json           the writer's schema (per split `num_examples`,
                          `shards`, `shard_checks`, compared by the readers;
                          every skipped sequence, camera or frame range with
                          its reason) plus, per split, counts per subject /
                          action / camera, and `notes`, `joints`, `units`
  statistics.json         mean / std of the pipeline's inputs and targets per
                          split (see `ige_tf.pose.data.pipeline`)

Train shards store their examples in a fixed pseudo-random order (seeded by
the shard name) so that shuffling with a modest buffer mixes frames well;
test shards keep camera-major frame order.

Policy for bad input (also in docs/data_pose.md):
  * fatal (`H36MDataError` naming the file): a missing or unreadable
    `cameras.h5`, a missing Human3.6M folder or npz file, bad settings, an
    npz whose pickle names anything but data (`ige_tf.data.safe_npz`), 3D
    poses that are not human-sized (median bone length of a sequence
    outside `HUMAN_MEDIAN_BONE_MM`: wrong unit, absurd values; the error
    names the likely unit and `--positions_unit`);
  * skipped and recorded in the manifest: an unreadable or malformed 3D or
    2D file (truncated, wrong joint count), a sequence without 2D for a
    camera (S11 Directions), a camera without calibration, a 2D sequence
    shorter than its 3D sequence;
  * frames dropped and recorded: non-finite 3D or 2D joints, a bone longer
    than 2 m or a joint farther than 100 m, hips closer than 1 mm, a joint
    at depth <= 0 when projecting `gt`;
  * noted: 2D longer than 3D (truncated to the 3D length, VideoPose3D's rule).
  2D keypoints outside the image are kept (cameras.h5 has no image size).
"""
import dataclasses
import os
import zlib

import numpy as np
import tqdm

from ige_tf.data import record_writer
from ige_tf.pose import camera as camera_lib
from ige_tf.pose import skeleton
from ige_tf.pose.data import h36m
from ige_tf.pose.data import records

RESERVED_SOURCES = ("gt", "sh", "sh_ft")
MIN_HIP_DISTANCE_MM = 1.0
# Plausibility of 3D poses: the median bone of the H36M17 skeleton (over a
# sequence's frames) of a person is a few decimetres (Human3.6M: ~0.23 m);
# a frame with a longer bone or a joint farther from the origin is absurd.
HUMAN_MEDIAN_BONE_MM = (80.0, 600.0)
MAX_BONE_MM = 2000.0
MAX_JOINT_DISTANCE_MM = 100_000.0
POSITIONS_UNITS = ("m", "mm")
LEGACY_CONFIG_FILE = "prepare_config.json"   # the settings file until v2
MANIFEST_FILE = record_writer.MANIFEST_FILE
STATISTICS_FILE = "statistics.json"
CONFIG_VERSION = 1
PREPARE_COMMAND = "bin/prepare_h36m.py"
_MPII_FROM_H36M32 = skeleton.conversion_indices(skeleton.H36M32,
                                                skeleton.MPII16)


@dataclasses.dataclass(frozen=True)
class _Inputs:
  """Resolved inputs: a 3D reader, a 2D provider and the cameras."""
  layout_3d: object
  layout_2d: object
  cameras: dict
  source: str


def _resolve_inputs(config):
  source = config["source"]
  h36m_dir, npz_3d, npz_2d = (config["h36m_dir"], config["npz_3d"],
                              config["npz_2d"])
  if npz_2d is not None and source in RESERVED_SOURCES:
    raise ValueError(f"--source={source} is a built-in 2D source; name the "
                     f"npz 2D source differently (e.g. the part of "
                     f"data_2d_h36m_<name>.npz) or drop --npz_2d")
  if npz_2d is None and source not in RESERVED_SOURCES:
    if npz_3d is None:
      raise ValueError(f"--source={source} is not one of {RESERVED_SOURCES}; "
                       "it names a VideoPose3D 2D file, so give --npz_2d (or "
                       "--npz_3d with data_2d_h36m_<source>.npz beside it)")
    npz_2d = os.path.join(os.path.dirname(npz_3d),
                          f"data_2d_h36m_{source}.npz")
    if not os.path.exists(npz_2d):
      raise h36m.H36MDataError(npz_2d, f"file not found (2D source "
                               f"{source!r}; pass --npz_2d)")
    config["npz_2d"] = npz_2d
  if npz_3d is None and h36m_dir is None:
    raise ValueError("give --h36m_dir (Martinez layout) or --npz_3d "
                     "(VideoPose3D layout)")
  cameras_path = config["cameras"] or (
      os.path.join(h36m_dir, "cameras.h5") if h36m_dir else None)
  if cameras_path is None:
    raise ValueError("the VideoPose3D layout has no cameras: pass --cameras "
                     "(the cameras.h5 of h36m.zip) or --h36m_dir")
  config["cameras"] = cameras_path
  cameras = h36m.load_cameras(cameras_path)

  if npz_3d is not None:
    layout_3d = h36m.VideoPose3DLayout(npz_3d, npz_2d,
                                       positions_unit=config["positions_unit"])
  else:
    layout_3d = h36m.MartinezLayout(h36m_dir, config["detections_dir"])
  if source == "gt":
    layout_2d = None
  elif source in h36m.DETECTION_FOLDERS:
    if h36m_dir is None and config["detections_dir"] is None:
      raise ValueError(f"--source={source} reads Martinez detection folders: "
                       "give --h36m_dir or --detections_dir")
    layout_2d = h36m.MartinezLayout(
        config["detections_dir"] or h36m_dir, config["detections_dir"])
  else:
    # 2D from an npz file; sequences are matched by name with the 3D source.
    layout_2d = (layout_3d if npz_3d is not None else
                 h36m.VideoPose3DLayout(None, config["npz_2d"]))
  return _Inputs(layout_3d, layout_2d, cameras, source)


def shard_name(subject, sequence):
  """File stem of a shard: "S1", "Walking 1" -> "S1-Walking_1"."""
  return f"{subject}-{sequence.replace(' ', '_')}"


def _entry(subject, sequence, camera, path, reason, scope, frames=None):
  entry = {"subject": subject, "sequence": sequence, "camera": camera,
           "file": None if path is None else str(path), "reason": reason,
           "scope": scope}
  if frames is not None:
    entry["frames"] = int(frames)
  return entry


def _statistics_sums(pose_2d, pose_3d, f, c):
  """float64 sums and sums of squares of the pipeline's standardized inputs."""
  norm_2d = camera_lib.normalize_pixels(pose_2d, f, c)
  rel_3d = pose_3d[:, 1:] - pose_3d[:, :1]
  values = {"pose_2d": norm_2d, "pose_3d": rel_3d,
            "pose_3d_camera": pose_3d[:, 1:], "root_3d": pose_3d[:, 0]}
  sums = {"count": int(len(pose_2d))}
  for key, value in values.items():
    value = value.astype(np.float64)
    sums[key + "_sum"] = value.sum(0).tolist()
    sums[key + "_sumsq"] = np.square(value).sum(0).tolist()
  return sums


def _bone_lengths_mm(world):
  """Bone lengths `[N, 16]` of H36M32 world poses `[N, 32, 3]`."""
  pose = world[:, skeleton.H36M32_TO_H36M17]
  child, parent = np.array(skeleton.H36M17.bones).T
  with np.errstate(invalid="ignore", over="ignore"):
    return np.linalg.norm(pose[:, child] - pose[:, parent], axis=-1)


def _absurd_frames(world):
  """bool `[N]`: frames with a bone or joint no person can have."""
  with np.errstate(invalid="ignore", over="ignore"):
    far = np.any(np.abs(world) > MAX_JOINT_DISTANCE_MM, axis=(1, 2))
    return far | np.any(_bone_lengths_mm(world) > MAX_BONE_MM, axis=1)


def _check_human_scale(world, valid, path, subject, sequence, unit):
  """Refuses a sequence whose poses are not human-sized in millimetres.

  Args:
    world: float64 `[N, 32, 3]`, as the readers return it (mm).
    valid: bool `[N]`, the finite frames.
    path: the 3D file (named in the error).
    subject, sequence: named in the error.
    unit: the unit the file was read in ("m", "mm" for a VideoPose3D npz),
      None for the Martinez h5 files (always mm).

  Raises:
    H36MDataError: median bone length outside `HUMAN_MEDIAN_BONE_MM`.
  """
  lengths = _bone_lengths_mm(world[valid])
  if not lengths.size:
    return   # no finite frame: the sequence is skipped as unusable
  median = float(np.median(lengths))
  low, high = HUMAN_MEDIAN_BONE_MM
  if low <= median <= high:
    return
  if unit is None:
    hint = "Martinez h5 files hold millimetres; is this a Human3.6M file?"
  elif unit == "m" and low <= median / 1000.0 <= high:
    hint = ("the file looks like millimetres (VideoPose3D files hold "
            "metres): pass --positions_unit=mm to convert")
  elif unit == "mm" and low <= median * 1000.0 <= high:
    hint = ("the file looks like metres, as VideoPose3D files hold: drop "
            "--positions_unit=mm")
  else:
    hint = "no unit makes these poses human-sized"
  read_as = "" if unit is None else f" with positions in {unit}"
  raise h36m.H36MDataError(path, f"3D poses of {subject} {sequence!r} are not "
                      f"human-sized{read_as}: median bone length {median:.4g} "
                      f"mm, expected {low:g} to {high:g} mm; {hint}")


def _project_gt(pose_cam_mm, cam):
  points = pose_cam_mm[:, _MPII_FROM_H36M32]
  with np.errstate(divide="ignore", invalid="ignore"):
    return camera_lib.project_points_np(points, cam.f, cam.c, cam.k, cam.p)


def _camera_2d(inputs, subject, sequence, camera_id, pose_cam_mm):
  """Returns (pose_2d `[N2, 16, 2]` or None, file, skip reason or None)."""
  source = inputs.source
  if source == "gt":
    return _project_gt(pose_cam_mm, inputs.cameras[(subject, camera_id)]), (
        None, None)
  if source in h36m.DETECTION_FOLDERS:
    path = inputs.layout_2d.detection_path(subject, sequence, camera_id,
                                           source)
    if path is None:
      searched = inputs.layout_2d.detection_candidates(subject, sequence,
                                                       camera_id, source)
      return None, (searched[0], "no detection file for this camera "
                    f"(searched {searched})")
    try:
      return h36m.read_detections(path), (path, None)
    except h36m.H36MDataError as e:
      return None, (e.path, e.problem)
  layout = inputs.layout_2d
  try:
    value = layout.positions_2d(subject, sequence, camera_id)
  except h36m.H36MDataError as e:
    return None, (e.path, e.problem)
  if value is None:
    what = ("sequence" if not layout.has_2d(subject, sequence) else "camera")
    return None, (layout.npz_2d, f"no 2D poses for this {what} in the npz "
                  "file")
  return value, (layout.npz_2d, None)


def build_shard(inputs, subject, sequence, subsample=1, shuffle_seed=None):
  """Examples of one (subject, sequence) over all cameras.

  Args:
    inputs: resolved inputs (internal).
    subject, sequence: e.g. "S1", "Walking 1".
    subsample: keep frames whose index is a multiple of this.
    shuffle_seed: None keeps camera-major frame order; an int permutes the
      examples with that seed.

  Returns:
    (arrays, skipped, notes): arrays is a dict pose_2d `[M, 16, 2]` px,
    pose_3d `[M, 17, 3]` m, f, c `[M, 2]`, k `[M, 3]`, p `[M, 2]`, camera
    `[M]` str, frame `[M]` int64 (or None if nothing is kept); skipped and
    notes are lists of manifest entries.
  """
  skipped, notes = [], []
  try:
    world = inputs.layout_3d.positions_3d(subject, sequence)
  except h36m.H36MDataError as e:
    skipped.append(_entry(subject, sequence, None, e.path, e.problem,
                          "sequence"))
    return None, skipped, notes
  path_3d = getattr(inputs.layout_3d, "npz_3d", None) or (
      inputs.layout_3d.positions_3d_path(subject, sequence))
  num_frames = len(world)
  if num_frames == 0:
    skipped.append(_entry(subject, sequence, None, path_3d,
                          "the 3D file has no frames", "sequence"))
    return None, skipped, notes
  valid_3d = np.ones(num_frames, bool)
  bad = h36m.nonfinite_frames(world)
  if len(bad):
    valid_3d[bad] = False
    skipped.append(_entry(subject, sequence, None, path_3d,
                          f"non-finite 3D joints in {len(bad)} of "
                          f"{num_frames} frames (first: frame {bad[0]}); "
                          "frames dropped", "frames", len(bad)))
  _check_human_scale(world, valid_3d, path_3d, subject, sequence,
                     getattr(inputs.layout_3d, "positions_unit", None))
  absurd = np.nonzero(valid_3d & _absurd_frames(world))[0]
  if len(absurd):
    valid_3d[absurd] = False
    skipped.append(_entry(subject, sequence, None, path_3d,
                          f"implausible 3D joints (a bone longer than "
                          f"{MAX_BONE_MM:g} mm or a joint farther than "
                          f"{MAX_JOINT_DISTANCE_MM:g} mm from the origin) in "
                          f"{len(absurd)} frames (first: frame {absurd[0]}); "
                          "frames dropped", "frames", len(absurd)))
  with np.errstate(invalid="ignore"):
    hips = np.linalg.norm(world[:, 1] - world[:, 6], axis=-1)
  degenerate = np.nonzero(valid_3d & (hips < MIN_HIP_DISTANCE_MM))[0]
  if len(degenerate):
    valid_3d[degenerate] = False
    skipped.append(_entry(subject, sequence, None, path_3d,
                          f"hips closer than {MIN_HIP_DISTANCE_MM} mm in "
                          f"{len(degenerate)} frames; frames dropped",
                          "frames", len(degenerate)))
  if not valid_3d.any():
    skipped.append(_entry(subject, sequence, None, path_3d,
                          "no usable 3D frames", "sequence"))
    return None, skipped, notes
  keep = valid_3d & (np.arange(num_frames) % subsample == 0)

  parts = []
  for camera_id in h36m.CAMERAS:
    cam = inputs.cameras.get((subject, camera_id))
    if cam is None:
      skipped.append(_entry(subject, sequence, camera_id, None,
                            f"no calibration for {subject} camera "
                            f"{camera_id} in cameras.h5", "camera"))
      continue
    with np.errstate(invalid="ignore"):
      pose_cam = cam.world_to_camera(world)
    pose_2d, (path_2d, problem) = _camera_2d(inputs, subject, sequence,
                                             camera_id, pose_cam)
    if pose_2d is None:
      skipped.append(_entry(subject, sequence, camera_id, path_2d, problem,
                            "camera"))
      continue
    if len(pose_2d) < num_frames:
      skipped.append(_entry(subject, sequence, camera_id, path_2d,
                            f"2D has {len(pose_2d)} frames but 3D has "
                            f"{num_frames}", "camera"))
      continue
    if len(pose_2d) > num_frames:
      notes.append(_entry(subject, sequence, camera_id, path_2d,
                          f"2D has {len(pose_2d)} frames, 3D {num_frames}; "
                          "extra 2D frames ignored", "camera"))
      pose_2d = pose_2d[:num_frames]
    usable = valid_3d.copy()
    if inputs.source == "gt":
      with np.errstate(invalid="ignore"):
        behind = valid_3d & np.any(pose_cam[:, :, 2] <= 0, axis=1)
      if behind.any():
        usable &= ~behind
        skipped.append(_entry(subject, sequence, camera_id, path_3d,
                              f"a joint at depth <= 0 in {behind.sum()} "
                              "frames; cannot project, frames dropped",
                              "frames", behind.sum()))
    bad_2d = np.zeros(num_frames, bool)
    bad_2d[h36m.nonfinite_frames(pose_2d)] = True
    bad_2d &= usable
    if bad_2d.any():
      first = np.nonzero(bad_2d)[0][0]
      skipped.append(_entry(subject, sequence, camera_id, path_2d,
                            f"non-finite 2D joints in {bad_2d.sum()} frames "
                            f"(first: frame {first}); frames dropped",
                            "frames", bad_2d.sum()))
    cam_keep = keep & usable & ~bad_2d
    frames = np.nonzero(cam_keep)[0]
    if len(frames) == 0:
      continue
    count = len(frames)
    pose_3d = pose_cam[frames][:, skeleton.H36M32_TO_H36M17] / 1000.0
    parts.append({
        "pose_2d": pose_2d[frames].astype(np.float32),
        "pose_3d": pose_3d.astype(np.float32),
        "f": np.tile(cam.f, (count, 1)).astype(np.float32),
        "c": np.tile(cam.c, (count, 1)).astype(np.float32),
        "k": np.tile(cam.k, (count, 1)).astype(np.float32),
        "p": np.tile(cam.p, (count, 1)).astype(np.float32),
        "camera": np.array([camera_id] * count, dtype=object),
        "frame": frames.astype(np.int64),
    })
  if not parts:
    return None, skipped, notes
  arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  if shuffle_seed is not None:
    order = np.random.default_rng(shuffle_seed).permutation(
        len(arrays["frame"]))
    arrays = {k: v[order] for k, v in arrays.items()}
  return arrays, skipped, notes


def _encoded(arrays, subject, action, sequence):
  """Serialized examples of a shard's arrays (see `build_shard`)."""
  for i in range(len(arrays["frame"])):
    yield records.encode_example(
        arrays["pose_2d"][i], arrays["pose_3d"][i], arrays["f"][i],
        arrays["c"][i], arrays["k"][i], arrays["p"][i], subject, action,
        sequence, arrays["camera"][i], arrays["frame"][i])


def _config(out_dir, source, h36m_dir, npz_3d, npz_2d, cameras,
            detections_dir, subsample, subjects, positions_unit):
  absolute = lambda p: None if p is None else os.path.abspath(p)  # noqa: E731
  if int(subsample) < 1:
    raise ValueError(f"--subsample must be >= 1, got {subsample}")
  unknown = [s for s in subjects if s not in h36m.SUBJECTS]
  if unknown:
    raise ValueError(f"unknown subjects {unknown}; known {h36m.SUBJECTS}")
  if not source:
    raise ValueError("--source is required (gt, sh, sh_ft or an npz name)")
  if positions_unit not in POSITIONS_UNITS:
    raise ValueError(f"--positions_unit must be one of {POSITIONS_UNITS}, got "
                     f"{positions_unit!r}")
  if positions_unit != "m" and npz_3d is None:
    raise ValueError("--positions_unit is the unit of --npz_3d; the Martinez "
                     "h5 files of --h36m_dir are always millimetres")
  return {"version": CONFIG_VERSION, "source": source,
          "h36m_dir": absolute(h36m_dir), "npz_3d": absolute(npz_3d),
          "npz_2d": absolute(npz_2d), "cameras": absolute(cameras),
          "detections_dir": absolute(detections_dir),
          "subsample": int(subsample), "subjects": list(subjects),
          "positions_unit": positions_unit}


def _combine_statistics(summaries):
  totals = {}
  for summary in summaries:
    sums = summary.get("sums")
    if not sums:
      continue
    for key, value in sums.items():
      value = np.asarray(value, np.float64)
      totals[key] = totals[key] + value if key in totals else value
  if not totals or totals["count"] == 0:
    return None
  count = float(totals["count"])
  stats = {"count": int(count)}
  for key in ("pose_2d", "pose_3d", "pose_3d_camera", "root_3d"):
    mean = totals[key + "_sum"] / count
    var = np.maximum(totals[key + "_sumsq"] / count - mean**2, 0.0)
    stats[key + "_mean"] = mean.tolist()
    stats[key + "_std"] = np.sqrt(var).tolist()
  return stats


def _add_counts(manifest, sidecars):
  """Adds this task's keys to the writer's manifest: per split the examples
  per subject / action / camera; `notes`, `joints`, `units`."""
  for entry in manifest["splits"].values():
    entry.update(subjects={}, actions={}, cameras={})
  notes = []
  for sidecar in sidecars:
    split = manifest["splits"][sidecar["split"]]
    n = sidecar["num_examples"]
    for key, value in (("subjects", sidecar["subject"]),
                       ("actions", sidecar["action"])):
      split[key][value] = split[key].get(value, 0) + n
    for camera_id, count in sidecar["cameras"].items():
      split["cameras"][camera_id] = split["cameras"].get(camera_id, 0) + count
    notes.extend(sidecar["notes"])
  manifest.update(
      notes=notes,
      joints={"pose_2d": list(skeleton.MPII16.joints),
              "pose_3d": list(skeleton.H36M17.joints)},
      units={"pose_2d": "pixels", "pose_3d": "metres, camera frame",
             "f": "pixels", "c": "pixels"})
  return manifest


def prepare_h36m(out_dir, source, h36m_dir=None, npz_3d=None, npz_2d=None,
                 cameras=None, detections_dir=None, subsample=1,
                 subjects=h36m.SUBJECTS, progress=True, positions_unit="m"):
  """Writes TFRecord shards, `manifest.json` and `statistics.json`.

  Resumable (`ige_tf.data.record_writer`): a shard whose sidecar exists and
  whose size and sha256 match it is kept; others (missing, truncated,
  corrupt) are rewritten. Every file is written atomically; temporaries of
  killed runs (`*.tmp-PID`) are removed.

  Args:
    out_dir: output folder (created).
    source: 2D source: "gt" (3D ground truth projected with the camera model,
      distortion included), "sh" / "sh_ft" (stacked-hourglass detections of
      the Martinez layout), or any other name for a VideoPose3D 2D npz file.
    h36m_dir: the Martinez `h36m/` folder (3D files, `cameras.h5`,
      detections).
    npz_3d: VideoPose3D `data_3d_h36m.npz`; overrides the 3D files of
      `h36m_dir`.
    npz_2d: VideoPose3D `data_2d_h36m_<source>.npz`; default: that file
      beside `npz_3d` when `source` is not gt/sh/sh_ft.
    cameras: `cameras.h5`; default `<h36m_dir>/cameras.h5`.
    detections_dir: root of `S*/StackedHourglass*` folders; default
      `h36m_dir`.
    subsample: keep every `subsample`-th frame (by original frame index).
    subjects: subjects to prepare.
    progress: show a tqdm progress bar.
    positions_unit: unit of the `npz_3d` positions: "m" (VideoPose3D's own
      files) or "mm" (converted to metres).

  Returns:
    The manifest dict (also written to `out_dir/manifest.json`).

  Raises:
    H36MDataError: missing/unreadable `cameras.h5` or inputs, or 3D poses
      that are not human-sized (names the file).
    ValueError: inconsistent settings; `record_writer.SettingsError`:
      `out_dir` prepared with others (naming them).
  """
  config = _config(out_dir, source, h36m_dir, npz_3d, npz_2d, cameras,
                   detections_dir, subsample, subjects, positions_unit)
  inputs = _resolve_inputs(dict(config))
  writer = record_writer.RecordWriter(
      out_dir, config, legacy_settings_file=LEGACY_CONFIG_FILE,
      settings_defaults={"positions_unit": "m"})   # runs before the setting

  plans, subject_skips = [], []
  for subject in subjects:
    try:
      sequences = inputs.layout_3d.sequences(subject)
    except h36m.H36MDataError as e:
      subject_skips.append(_entry(subject, None, None, e.path, e.problem,
                                  "subject"))
      continue
    for sequence in sequences:
      split = h36m.split_of(subject)
      plans.append((f"{split}/{shard_name(subject, sequence)}.tfrecord",
                    split, subject, sequence))
  shards = [plan[0] for plan in plans]
  for split in h36m.SPLITS:   # readers tell an empty split from a missing one
    os.makedirs(writer.path(split), exist_ok=True)
  writer.remove_stale_temporaries(shards)
  examples = 0
  bar = tqdm.tqdm(plans, desc="prepare_h36m", unit="seq", disable=not progress)
  for shard, split, subject, sequence in bar:
    sidecar = writer.finished(shard, log=bar.write)
    if sidecar is None:
      seed = (zlib.crc32(shard_name(subject, sequence).encode())
              if split == "train" else None)
      arrays, skipped, notes = build_shard(inputs, subject, sequence,
                                           config["subsample"], seed)
      action = h36m.action_of(sequence)
      fields = dict(subject=subject, sequence=sequence, action=action,
                    cameras={}, skipped=skipped, notes=notes, sums=None)
      if arrays is not None:
        cameras_seen, counts = np.unique(arrays["camera"].astype(str),
                                         return_counts=True)
        fields.update(
            cameras={str(c): int(n) for c, n in zip(cameras_seen, counts)},
            sums=_statistics_sums(arrays["pose_2d"], arrays["pose_3d"],
                                  arrays["f"], arrays["c"]))
      sidecar = writer.write_shard(
          shard, () if arrays is None else _encoded(arrays, subject, action,
                                                    sequence), **fields)
    examples += sidecar["num_examples"]
    bar.set_postfix(examples=examples, refresh=False)

  manifest, sidecars = writer.manifest(shards, splits=h36m.SPLITS,
                                       skipped=subject_skips)
  _add_counts(manifest, sidecars)
  writer.write_json(STATISTICS_FILE, {split: _combine_statistics(
      [s for s in sidecars if s["split"] == split]) for split in h36m.SPLITS})
  writer.write_manifest(manifest)
  return manifest
