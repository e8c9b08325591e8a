-- GPU bookings (issue 27): a member (or an admin for them, or for maintenance) books N
-- GPUs for a window. The GPUs are chosen when it is booked, so a booking beyond capacity
-- is refused then, and the calendar shows which GPUs each booking holds.
CREATE TABLE reservations (
    id          TEXT PRIMARY KEY,
    -- NULL: maintenance (nobody's notebooks use its GPUs during the window)
    user_id     INTEGER REFERENCES users(id) ON DELETE CASCADE,
    -- the member's name as booked, or 'maintenance'
    member      TEXT NOT NULL,
    purpose     TEXT NOT NULL DEFAULT '',
    -- NULL: any model
    gpu_name    TEXT,
    starts_at   INTEGER NOT NULL,
    ends_at     INTEGER NOT NULL CHECK (ends_at > starts_at),
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX reservations_window ON reservations(ends_at, starts_at);

CREATE TABLE reservation_gpus (
    reservation_id TEXT NOT NULL REFERENCES reservations(id) ON DELETE CASCADE,
    gpu_uuid       TEXT NOT NULL,
    PRIMARY KEY (reservation_id, gpu_uuid)
) WITHOUT ROWID;
CREATE INDEX reservation_gpus_gpu ON reservation_gpus(gpu_uuid);

-- A notebook or job started on GPUs booked for its member runs until the booking ends
-- (NULL: it holds no booked GPU).
ALTER TABLE notebooks ADD COLUMN booked_until INTEGER;
