"""Exit codes of `cilium-migrate`, distinct per kind of failure so scripts can branch on them."""

OK = 0
INVALID_INPUT = 1  # a bad spec, flag or file: fix the input
BLOCKED = 2  # the plan has blocking findings / a request was refused by the migration
UNREACHABLE = 3  # the cluster or the Temporal server could not be reached
NOT_FOUND = 4  # no such migration or sandbox
