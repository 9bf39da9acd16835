"""The names of smsupervise's own events, declared once (as the options are in ``options.py``).

Every event PID 1 writes (``EventLog``'s ``info``/``warning``/``error``/``debug``, a plan's ``Note``, the
Pipe relay's ``emit``) uses one of these names; ``docs/events.md`` documents each with its fields.
``tests/unit/test_events.py`` holds the code, this table and the docs together, both ways: a new event
is added here and in the docs, or the suite fails. smsupervise-local's and the Pipe tools' own events are
those tools' vocabularies (``docs/local.md``, ``docs/pipe-mode.md``).
"""

from __future__ import annotations

EVENTS: frozenset[str] = frozenset(
    {
        "checkpoint_done",
        "stopped_group_resumed",
        "control_socket_paused",
        "control_request_failed",
        "checkpoint_step_failed",
        "checkpoint_hook_output_direct",
        "checkpoint_hook_adopted",
        "checkpoint_hook_failed",
        "checkpoint_hook_killed",
        "checkpoint_hook_started",
        "checkpoint_signal_sent",
        "child_exited",
        "child_spawned",
        "control_socket_ready",
        "control_socket_unavailable",
        "debug_request",
        "exiting",
        "failure_kept",
        "failure_written",
        "grace_expired",
        "keep_alive",
        "keep_alive_ended",
        "keep_alive_started",
        "leftovers_killed",
        "leftovers_terminated",
        "leftovers_unkillable",
        "max_runtime_exceeded",
        "mesh_connected",
        "mesh_peer_unreachable",
        "mesh_refused",
        "mesh_accept_paused",
        "mesh_report_refused_summary",
        "mesh_report_refused",
        "mesh_refused_summary",
        "mesh_started",
        "mesh_unavailable",
        "mpi_master_finished",
        "outcome_not_written",
        "output_cut_off",
        "peer_failed",
        "peer_lost",
        "peer_port_waiting",
        "peer_resolved",
        "peer_silent",
        "peer_unresolved",
        "peer_wait_skipped",
        "peer_waiting",
        "pipe_epoch_done",
        "pipe_relay_failed",
        "pipe_relay_started",
        "rank_failed",
        "runner_chosen",
        "runner_not_supported",
        "signal_forwarded",
        "signal_received",
        "source_ready",
        "source_stopped",
        "stale_outcome_removed",
        "start_failed",
        "stop_advanced",
        "stop_requested",
        "stopped_before_start",
        "subreaper_enabled",
        "subreaper_failed",
    }
)
