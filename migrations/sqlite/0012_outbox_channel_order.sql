-- A channel's notifications go out in order: a row is not claimed while an older pending row
-- of its channel (of the same or a higher priority) is still waiting, for its retry after a
-- failed post or its lease. The claim looks those rows up by channel.
CREATE INDEX outbox_pending_by_channel ON outbox (channel, id) WHERE status = 'pending';
