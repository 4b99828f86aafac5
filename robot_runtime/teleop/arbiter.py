"""Who commands the robot this tick: the policy, or the operator holding the deadman.

The deadman must be asserted continuously: an `engaged` signal older than
`deadman_timeout` counts as released, so a crashed teleop device hands control
back instead of freezing it on the operator's last command.
"""
from __future__ import annotations

# Command sources, as carried in the executed command's header.frame_id.
POLICY, OPERATOR, HOLD = "policy", "operator", "hold"


class TeleopArbiter:
    def __init__(self, deadman_timeout: float = 0.25):
        self.deadman_timeout = deadman_timeout
        self._engaged = False
        self._engaged_at = -float("inf")

    def set_engaged(self, engaged: bool, now: float) -> None:
        self._engaged = engaged
        self._engaged_at = now

    def source(self, now: float) -> str:
        if self._engaged and now - self._engaged_at <= self.deadman_timeout:
            return OPERATOR
        return POLICY

    def accepts(self, sender: str, now: float) -> bool:
        """Should a command from `sender` (POLICY or OPERATOR) go to the robot now?"""
        return sender == self.source(now)
