-- hatang collector store, version 4: a tamper-evident hash chain over the reports.
-- Each stored report gets, per site and in arrival order, a position (chain_seq), the
-- chain hash of the report before it (prev_hash) and its own chain hash (chain_hash,
-- see collector/store/chain.py). chain_heads holds each site's newest position and hash:
-- the row a writer locks to append to the site's chain, and what evidence manifests
-- record. Rows stored before this version are chained by the collector right after this
-- migration (sha256 is not portable SQL), in the same transaction.

ALTER TABLE reports ADD COLUMN chain_seq BIGINT;
ALTER TABLE reports ADD COLUMN prev_hash TEXT;
ALTER TABLE reports ADD COLUMN chain_hash TEXT;
CREATE INDEX reports_site_chain ON reports (site, chain_seq);

CREATE TABLE chain_heads (
    site  TEXT PRIMARY KEY,
    seq   BIGINT NOT NULL,
    head  TEXT NOT NULL
);
