-- The client address (IP:PORT) of an admin API call, so a refused call can be
-- traced to where it came from. NULL for rows written before this column.
ALTER TABLE audit_log ADD COLUMN client TEXT;
