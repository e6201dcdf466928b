"""The outbox: the shared kernel of delivery jobs (intake, delivery, watch and bounces call it;
it imports no feature room).

- :mod:`postwatch.outbox.ids`: postwatch's Message-IDs (make, recognise);
- :mod:`postwatch.outbox.jobs`: job states (:class:`JobState`), the one rule that builds a
  submission's jobs (:func:`job_rows`, :func:`enqueue`), claim / release / queue / retry_now /
  backoff, lease owners and the recovery of a dead process's claims;
- :mod:`postwatch.outbox.transitions`: the one transition function (:func:`apply`) for the
  worker's reply, an MTA log line and a DSN, with the one ``delivery_attempt`` payload.
"""

from postwatch.outbox.ids import (
    message_id,
    normalise_message_id,
    own_domain,
    own_submission,
    queued_as,
)
from postwatch.outbox.jobs import (
    FINAL_STATES,
    JOB_COLUMNS,
    AttachmentData,
    Claimed,
    JobRole,
    JobState,
    MailInput,
    backoff,
    claim,
    enqueue,
    job_rows,
    lease_owner,
    queue,
    recover_claims,
    release,
    retry_now,
    update_submission_status,
)
from postwatch.outbox.transitions import (
    Report,
    Reported,
    Result,
    Source,
    Transition,
    apply,
    apply_downstream,
    apply_observation,
    attempt_data,
    record,
)

__all__ = [
    "FINAL_STATES",
    "JOB_COLUMNS",
    "AttachmentData",
    "Claimed",
    "JobRole",
    "JobState",
    "MailInput",
    "Report",
    "Reported",
    "Result",
    "Source",
    "Transition",
    "apply",
    "apply_downstream",
    "apply_observation",
    "attempt_data",
    "backoff",
    "claim",
    "enqueue",
    "job_rows",
    "lease_owner",
    "message_id",
    "normalise_message_id",
    "own_domain",
    "own_submission",
    "queue",
    "queued_as",
    "record",
    "recover_claims",
    "release",
    "retry_now",
    "update_submission_status",
]
