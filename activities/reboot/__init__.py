"""Rebooting a node: the reboot step (`step`) and the ways to ask a node to reboot, one
strategy per module behind `strategies.RebootStrategy`.

Strategies: `node-shell`, a privileged pod on the node that asks the host's systemd to reboot;
`docker`, for kind nodes that are containers; `command`, an operator's template such as an ssh
call. Adding one is a module here and a line in `strategies.strategies`.
"""
