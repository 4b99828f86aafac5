"""The policy's proposals name their bundle in frame_id; the recorder credits only what is a bundle label."""
import pytest

from robot_runtime.nodes.ros_io import bundle_label


@pytest.mark.parametrize("frame_id, label", [
    ("reference@e2e", "reference@e2e"), ("vla@r3.1", "vla@r3.1"), ("", ""), ("policy", ""), ("@1", ""),
    ("m@", ""), ("../../x@1", ""), ("m@1@2", "m@1@2"), ("m@" + "9" * 200, ""), ("m\n@1", ""),
])
def test_bundle_label_accepts_only_safe_model_at_version(frame_id, label):
    assert bundle_label(frame_id) == label
