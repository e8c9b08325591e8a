-- Idle reclaim (issue 12): an admin can exempt a notebook, and a notebook can carry a
-- notice for its member (e.g. it got its GPU because an idle notebook was stopped).
ALTER TABLE notebooks ADD COLUMN idle_exempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE notebooks ADD COLUMN notice TEXT;
