"""`synthetic.make_synthetic_records`: the tiny prepared data set benches and
tests train on (generated models, a split file, records)."""
import json
import os

from ige_tf.voxel import synthetic


def test_records_follow_the_split_and_a_rerun_keeps_them(tmp_path):
  root = str(tmp_path / "data")
  records = synthetic.make_synthetic_records(
      root, models_per_synset=3, num_train=2, resolutions=(6,), views=1,
      image_size=32)
  assert records == os.path.join(root, "records")
  with open(os.path.join(root, "split.json")) as f:
    (split,) = json.load(f)
  ids = sorted(os.listdir(os.path.join(root, "shapes", "02691156")))
  assert split == {"taxonomy_id": "02691156", "train": ids[:2],
                   "test": ids[2:]}
  with open(os.path.join(records, "manifest.json")) as f:
    manifest = json.load(f)
  assert manifest["complete"]
  assert {name: (s["num_models"], s["num_examples"])
          for name, s in manifest["splits"].items()} == {
              "train": (2, 2), "test": (1, 1)}
  shards = {os.path.join(records, s) for split_ in manifest["splits"].values()
            for s in split_["shards"]}
  written = {path: os.stat(path).st_mtime_ns for path in shards}
  again = synthetic.make_synthetic_records(
      root, models_per_synset=3, num_train=2, resolutions=(6,), views=1,
      image_size=32)
  assert again == records
  assert {path: os.stat(path).st_mtime_ns for path in shards} == written
