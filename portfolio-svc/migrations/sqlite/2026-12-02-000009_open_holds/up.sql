-- The holds not yet taken or released, which the metric portfolio_holds_open counts every
-- few seconds without reading every hold ever made.
CREATE INDEX ledger_holds_open ON ledger_holds (transfer_id) WHERE state = 'held';
