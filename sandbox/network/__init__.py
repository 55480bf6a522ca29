"""The sandbox's real network (``sandbox up --network real``): nodes and pods as Linux network
namespaces on an underlay bridge, with real flanneld and real CNI plugins carrying packets.

Only used on Linux as root; the simulated network (`sandbox.simulator`'s datapath model) stays
the default and the only mode for large clusters.
"""
