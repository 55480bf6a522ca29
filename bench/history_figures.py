"""Where a migration's time went, read from its workflow histories (server timestamps).

The parent's history marks each phase where the phase search attribute changes, each node's
child where it is started and where it completes; a child's history times each activity from
its scheduling to its completion, retries included.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHistory

from workflows.identity import PHASE_ATTRIBUTE

FIRST_PHASE = "discovering"  # the workflow starts in it, without setting the attribute
_CLOSED = (EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED, EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
           EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
           EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED)


_RUN_ENDS = (EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
             EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW)


def _time(event: HistoryEvent) -> datetime:
    return event.event_time.ToDatetime()


@dataclass
class ActivitySpan:
    name: str
    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass
class ParentTimeline:
    phases: list[tuple[str, datetime, datetime]] = field(default_factory=list)
    children: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)  # by ID
    activities: list[ActivitySpan] = field(default_factory=list)

    def phase_seconds(self) -> dict[str, float]:
        seconds: dict[str, float] = {}
        for phase, start, end in self.phases:
            seconds[phase] = seconds.get(phase, 0.0) + (end - start).total_seconds()
        return seconds

    def activities_in(self, phase: str) -> list[ActivitySpan]:
        spans = [(s, e) for p, s, e in self.phases if p == phase]
        return [a for a in self.activities if any(s <= a.start < e for s, e in spans)]


def activity_spans(history: WorkflowHistory) -> list[ActivitySpan]:
    scheduled: dict[int, tuple[str, datetime]] = {}
    spans = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[event.event_id] = (name, _time(event))
        elif event.event_type in _CLOSED:
            name, start = scheduled.pop(_scheduled_id(event))
            spans.append(ActivitySpan(name, start, _time(event)))
    return spans


def _scheduled_id(event: HistoryEvent) -> int:
    """The scheduling event of the activity a closing event closes."""
    kind = event.event_type
    if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
        return event.activity_task_completed_event_attributes.scheduled_event_id
    if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
        return event.activity_task_failed_event_attributes.scheduled_event_id
    if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
        return event.activity_task_timed_out_event_attributes.scheduled_event_id
    return event.activity_task_canceled_event_attributes.scheduled_event_id


def parent_timeline(runs: list[WorkflowHistory]) -> ParentTimeline:
    """The phases, children and steps of a migration across every run of its chain: a run that
    continued as new carries its phase on, without setting the attribute again."""
    timeline = ParentTimeline(activities=[a for run in runs for a in activity_spans(run)])
    phase, since = FIRST_PHASE, None
    started: dict[str, datetime] = {}
    for event in (event for run in runs for event in run.events):
        when = _time(event)
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            since = when
        elif kind == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = (event.upsert_workflow_search_attributes_event_attributes
                      .search_attributes.indexed_fields)
            if PHASE_ATTRIBUTE.name in fields and since is not None:
                timeline.phases.append((phase, since, when))
                phase, since = json.loads(fields[PHASE_ATTRIBUTE.name].data), when
        elif kind == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            started[event.start_child_workflow_execution_initiated_event_attributes
                    .workflow_id] = when
        elif kind == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED:
            child = event.child_workflow_execution_completed_event_attributes
            workflow_id = child.workflow_execution.workflow_id
            timeline.children[workflow_id] = (started[workflow_id], when)
        elif kind in _RUN_ENDS and since is not None:
            timeline.phases.append((phase, since, when))
    return timeline


@dataclass
class WaveGaps:
    """Where the time between one wave's nodes and the next went, summed over every wave, in
    seconds: the wave workflow starting its first node and reporting after its last one, the
    parent stopping the connectivity monitor and running the health check, and the rest
    (gates, workflow tasks, starting the next wave)."""

    waves: int = 0
    starting_nodes: float = 0.0  # wave workflow started -> its first node's child initiated
    reporting: float = 0.0  # its last node's child completed -> the wave's completion in parent
    monitor_stop: float = 0.0  # wave completed in the parent -> the monitor's step closed
    health_check: float = 0.0  # the health check's step, scheduled to closed
    rest: float = 0.0  # the health check's end -> the next wave workflow initiated

    def lines(self) -> list[str]:
        per = max(self.waves, 1)
        return [f"  {name:<15} {seconds:7.1f}s ({seconds / per:.2f}s a wave)" for name, seconds in (
            ("starting nodes", self.starting_nodes), ("reporting", self.reporting),
            ("stopping monitor", self.monitor_stop), ("health check", self.health_check),
            ("next wave", self.rest))]


def wave_gaps(runs: list[WorkflowHistory], waves: dict[str, WorkflowHistory],
              wave_type: str, monitor: str, health: str) -> WaveGaps:
    """The gaps around each wave workflow (`waves` by workflow ID) in the parent's runs."""
    gaps = WaveGaps()
    events = [event for run in runs for event in run.events]
    spans = [a for run in runs for a in activity_spans(run)]
    initiated: list[tuple[str, datetime]] = []
    completed: dict[str, datetime] = {}
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            child = event.start_child_workflow_execution_initiated_event_attributes
            if child.workflow_type.name == wave_type:
                initiated.append((child.workflow_id, _time(event)))
        elif event.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED:
            child_done = event.child_workflow_execution_completed_event_attributes
            completed[child_done.workflow_execution.workflow_id] = _time(event)
    for position, (wave_id, _) in enumerate(initiated):
        history = waves.get(wave_id)
        if history is None or wave_id not in completed:
            continue
        gaps.waves += 1
        own = history.events
        nodes_started = [_time(e) for e in own if e.event_type
                         == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED]
        nodes_done = [_time(e) for e in own if e.event_type
                      == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED]
        if nodes_started and nodes_done:
            gaps.starting_nodes += (min(nodes_started) - _time(own[0])).total_seconds()
            gaps.reporting += (completed[wave_id] - max(nodes_done)).total_seconds()
        end = completed[wave_id]
        following = (initiated[position + 1][1] if position + 1 < len(initiated) else None)
        after = [a for a in spans if a.end >= end and (following is None or a.start < following)]
        if stopped := [a for a in after if a.name == monitor and a.start < end]:
            gaps.monitor_stop += (max(a.end for a in stopped) - end).total_seconds()
        checks = [a for a in after if a.name == health and a.start >= end]
        if checks:
            gaps.health_check += sum(a.seconds for a in checks[:1])
            if following is not None:
                gaps.rest += (following - checks[0].end).total_seconds()
    return gaps


@dataclass
class AgentRestart:
    """One agent restart step, cut where the cluster's own timestamps (whole seconds) allow:
    the step's start to the new agent pod's creation (the old one deleted, the DaemonSet
    controller making another), to its Ready condition (scheduled, started, Ready), to the
    step's completion (the step noticing, Temporal recording it)."""

    replacing: float
    starting: float
    noticing: float


def agent_restarts(children: dict[str, WorkflowHistory], activity: str) -> list[AgentRestart]:
    """Every completed ``activity`` (the agent restart) whose result names its pod's times."""
    found = []
    for history in children.values():
        scheduled: dict[int, datetime] = {}
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                attributes = event.activity_task_scheduled_event_attributes
                if attributes.activity_type.name == activity:
                    scheduled[event.event_id] = _time(event)
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                done = event.activity_task_completed_event_attributes
                if done.scheduled_event_id not in scheduled or not done.result.payloads:
                    continue
                result = json.loads(done.result.payloads[0].data)
                if not result.get("created_at") or not result.get("ready_at"):
                    continue
                created = datetime.fromisoformat(result["created_at"]).replace(tzinfo=None)
                ready = datetime.fromisoformat(result["ready_at"]).replace(tzinfo=None)
                start = scheduled[done.scheduled_event_id].replace(tzinfo=None)
                found.append(AgentRestart(
                    replacing=(created - start).total_seconds(),
                    starting=(ready - created).total_seconds(),
                    noticing=(_time(event).replace(tzinfo=None) - ready).total_seconds()))
    return found
