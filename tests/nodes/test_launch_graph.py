"""The launch files' graph with the real launch tooling, where it is installed (a ROS 2 install; not on PyPI)."""
import pytest

from robot_runtime.bringup.graph import GRAPHS, config_dir


@pytest.mark.parametrize("graph", sorted(GRAPHS))
@pytest.mark.parametrize("autostart", ["true", "false"])
def test_managed_nodes_are_lifecycle_nodes_driven_from_the_launch_file(graph, autostart):
    # launch_ros first: from the checkout, `import launch` finds the launch/ folder (a namespace package)
    launch_ros = pytest.importorskip("launch_ros", reason="launch_ros is not on PyPI; a ROS 2 install has it")
    import launch
    from robot_runtime.bringup.graph import launch_description

    description = launch_description(graph)
    assert {a.name for a in description.get_launch_arguments()} == {"params_file", "namespace", "autostart"}
    context = launch.LaunchContext()
    context.launch_configurations.update({"params_file": str(config_dir() / GRAPHS[graph][1]), "namespace": "/r1",
                                          "autostart": autostart})
    [nodes] = [e for e in description.entities if isinstance(e, launch.actions.OpaqueFunction)]
    actions = nodes.execute(context)
    specs = GRAPHS[graph][0]()
    managed = sum(spec.managed for spec in specs)
    kinds = [type(a) for a in actions]
    assert kinds.count(launch_ros.actions.LifecycleNode) == managed
    assert kinds.count(launch_ros.actions.Node) == len(specs) - managed
    events = managed if autostart == "true" else 0  # configure now, activate on reaching inactive
    assert kinds.count(launch.actions.EmitEvent) == kinds.count(launch.actions.RegisterEventHandler) == events
