"""Episodes in and out: the `robot-runtime-episodes` CLI, the HTML/MP4 viewer, rosbag2 reading and import.

May import the contracts and `capture`; ROS message classes only through `rosbag` (lazily)."""
