"""Parameter descriptors without DDS traffic: ranges and choices are declared, enforced, and a bad start-up value
stops the node naming the parameter."""
import pytest
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter

from robot_runtime.nodes.parameters import declare, declare_safety


@pytest.fixture
def make_node():
    rclpy.init()
    nodes = []

    def make(**overrides):
        nodes.append(Node("parameters_test", parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()]))
        return nodes[-1]

    yield make
    for node in nodes:
        node.destroy_node()
    rclpy.shutdown()


def test_ranges_and_choices_are_in_the_descriptor_and_enforced(make_node):
    node = make_node()
    assert declare(node, "wait", 0.1, "seconds", low=0.001, high=10.0) == 0.1
    declare(node, "steps", 5, "count", low=1, high=100)
    declare(node, "transport", "raw", "frames", choices=("raw", "compressed"))
    declare_safety(node)
    [described] = node.describe_parameters(["wait"])
    assert (described.floating_point_range[0].from_value, described.floating_point_range[0].to_value) == (0.001, 10)
    [described] = node.describe_parameters(["steps"])
    assert (described.integer_range[0].from_value, described.integer_range[0].to_value) == (1, 100)
    [described] = node.describe_parameters(["transport"])
    assert "(one of: raw | compressed)" in described.description
    results = node.set_parameters([Parameter("wait", value=11.0), Parameter("steps", value=0),
                                   Parameter("transport", value="h264"), Parameter("max_delta", value=[0.1, -1.0]),
                                   Parameter("workspace", value=["hand_z:ee_dz:low"]),
                                   Parameter("transport", value="compressed")])
    assert [r.successful for r in results] == [False, False, False, False, False, True]
    assert "h264' is not one of raw | compressed" in results[2].reason
    assert "element -1.0 is outside" in results[3].reason
    assert "is not state_name:action_name:low:high" in results[4].reason


@pytest.mark.parametrize("overrides, declaration, message", [
    ({"wait": 20.0}, ("wait", 0.1, {"low": 0.001, "high": 10.0}), "parameter 'wait'.*out of range"),
    ({"mode": "fly"}, ("mode", "off", {"choices": ("off", "on")}), "parameter 'mode': 'fly' is not one of off | on"),
])
def test_a_bad_start_up_value_stops_the_node_naming_the_parameter(make_node, overrides, declaration, message):
    name, default, constraints = declaration
    with pytest.raises(SystemExit, match=f"/parameters_test: {message}"):
        declare(make_node(**overrides), name, default, "test", **constraints)
