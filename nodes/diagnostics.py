"""Publishing node health on /diagnostics (diagnostic_msgs), the way ROS 2 tools expect it."""
from __future__ import annotations

from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

DIAGNOSTICS_TOPIC = "/diagnostics"
OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


def percentile(values: deque | list, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def status(name: str, hardware_id: str, level: bytes, message: str, values: dict) -> DiagnosticStatus:
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v))
                                    for k, v in values.items()])


def array(node, statuses: list[DiagnosticStatus]) -> DiagnosticArray:
    msg = DiagnosticArray(status=statuses)
    msg.header.stamp = node.get_clock().now().to_msg()
    return msg
