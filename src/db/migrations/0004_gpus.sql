-- One row per GPU held: the primary key makes it impossible for two notebooks to hold one.
CREATE TABLE gpu_allocations (
    gpu_uuid    TEXT PRIMARY KEY,
    notebook_id TEXT NOT NULL REFERENCES notebooks(id) ON DELETE CASCADE,
    since       INTEGER NOT NULL
);
CREATE INDEX gpu_allocations_notebook ON gpu_allocations(notebook_id);
CREATE INDEX notebooks_queue ON notebooks(state, queued_at);
