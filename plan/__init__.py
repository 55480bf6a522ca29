"""The migration's decisions, as pure functions of data.

`plan` turns what the operator asks for (`spec.MigrationSpec`, read by `spec_loader.load_spec`)
and what discovery found (`facts.ClusterFacts`) into decisions: preflight findings
(`preflight.run_preflight`), the wave order (`waves.plan_waves`) and the Cilium Helm values for
each phase (`helm_values`).

Everything here is pure and deterministic: no clocks, no randomness, no network or cluster
calls, and no file access beyond reading the chart data shipped in `plan/data`. Temporal
workflows import these modules (through `workflow.unsafe.imports_passed_through()`) and call
them during replay, so the same inputs must always give the same outputs.
"""
