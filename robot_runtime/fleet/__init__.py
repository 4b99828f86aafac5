"""The robot's side of the fleet: the upload agent (`uploader`, its wire `protocol`), signed releases
(`releases`), the model store that installs only those (`model_store`), keys and the `robot-runtime-fleet` CLI.

May import the contracts (`episode`, `bundle`, `files`) and `capture`; never ROS (the node is nodes/fleet_agent.py).
"""
