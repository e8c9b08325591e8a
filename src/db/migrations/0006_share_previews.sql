-- Gallery previews are computed when a share is created or its notebook stops, never on
-- an anonymous request.
ALTER TABLE shares ADD COLUMN preview TEXT NOT NULL DEFAULT '';
