"""Starting the node graph: the graph as data (`graph`) for launch files and the local launcher.

May import `sim` (the simulated robot's names); never the nodes themselves, which run as processes."""
