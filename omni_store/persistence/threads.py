"""Thread keys: which conversation a message belongs to.

- With a channel thread id, the key is the thread id.
- Without one (fallback rule v1), the key is the contact's external user id plus the time
  bucket its ``channel_timestamp`` falls in: buckets of the channel account's fallback window
  (default 24 h), aligned to the Unix epoch. The key depends only on the event, never on what
  arrived before it, so a late or out-of-order event lands with its neighbours in time.

Keys are scoped by (tenant, channel account) by the conversations' unique constraint.
"""

from __future__ import annotations

from datetime import datetime


def thread_key(
    *,
    external_thread_id: str | None,
    external_user_id: str | None,
    channel_timestamp: datetime,
    window_seconds: int | None,
) -> str:
    """The thread key of an event. ``window_seconds`` is the channel account's fallback
    window; a caller that has not read the account passes None, which is enough only for an
    event with a thread id."""
    if external_thread_id is not None:
        return f"t:{external_thread_id}"
    if external_user_id is None:
        raise ValueError("a thread key needs a thread id or an external user id")
    if window_seconds is None:
        raise ValueError("a thread key without a thread id needs the account's window")
    epoch_seconds = int(channel_timestamp.timestamp() // 1)
    bucket_start = epoch_seconds - epoch_seconds % window_seconds
    # The user id goes last: it may itself contain colons.
    return f"u:{bucket_start}:{external_user_id}"
