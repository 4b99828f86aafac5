"""`python -m robot_runtime.improvement_loop.demo`."""
from robot_runtime.improvement_loop.demo.cli import main

main()
