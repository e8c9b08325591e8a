-- Where the proxy finds a running notebook's Jupyter (its address on the private network).
ALTER TABLE notebooks ADD COLUMN container_ip TEXT;
