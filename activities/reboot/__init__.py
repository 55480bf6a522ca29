"""Rebooting a node: the reboot step (`step`) and the ways to ask a node to reboot, one
strategy per module behind `strategies.RebootStrategy`.

Strategies: `node-shell`, a privileged pod on the node that asks the host's systemd to reboot;
`docker`, for kind nodes that are containers; `command`, an operator's template such as an ssh
call. Each also reads the node's boot witness, what a reboot changes as that strategy sees it:
the bootID, or a container's start time (a container shares its host's kernel and bootID).
Adding one is a module here and a line in `strategies.strategies`.
"""
