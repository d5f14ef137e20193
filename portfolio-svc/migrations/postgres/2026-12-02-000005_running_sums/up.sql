-- Running sums: each deposit row carries the sum of its account's deposits up to and including
-- itself, in (confirmed_at, transfer_id) order. The deposits of an account confirmed after a
-- snapshot's as_of are then the latest running sum minus the running sum of the last deposit
-- confirmed at or before as_of: two index searches, whatever the number of deposits.
--
-- Triggers keep it, not the application, so that a replica of the previous version still
-- running during a rolling update keeps it too. A transaction-scoped advisory lock on the
-- account serialises deposits to one account (each reads its predecessor's sum); deposits to
-- different accounts do not wait for each other. A deposit confirmed before others already
-- stored (a late redelivery) adds its amount to theirs.
ALTER TABLE ledger_deposits ADD COLUMN running BIGINT NOT NULL DEFAULT 0;

CREATE FUNCTION ledger_deposits_running() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Two-key form: its own key space, apart from the one-key locks of migrations and flips.
    PERFORM pg_advisory_xact_lock(1886352244, hashtext(NEW.account_number));
    NEW.running := NEW.amount + COALESCE((
        SELECT running FROM ledger_deposits
        WHERE account_number = NEW.account_number
          AND (confirmed_at, transfer_id) < (NEW.confirmed_at, NEW.transfer_id)
        ORDER BY confirmed_at DESC, transfer_id DESC
        LIMIT 1), 0);
    RETURN NEW;
END
$$;

CREATE FUNCTION ledger_deposits_later() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE ledger_deposits SET running = running + NEW.amount
        WHERE account_number = NEW.account_number
          AND (confirmed_at, transfer_id) > (NEW.confirmed_at, NEW.transfer_id);
    -- Every replica drops what it remembers of the account (delivered at commit, in commit
    -- order; see portfolio-svc/src/cache.rs).
    PERFORM pg_notify('invest_portfolio', 'd' || NEW.account_number);
    RETURN NULL;
END
$$;

-- Created before the backfill: they lock ledger_deposits against inserts until this migration
-- commits, so no deposit falls between the backfill and the triggers.
CREATE TRIGGER ledger_deposits_running BEFORE INSERT ON ledger_deposits
    FOR EACH ROW EXECUTE FUNCTION ledger_deposits_running();
CREATE TRIGGER ledger_deposits_later AFTER INSERT ON ledger_deposits
    FOR EACH ROW EXECUTE FUNCTION ledger_deposits_later();

UPDATE ledger_deposits d SET running = w.running
    FROM (SELECT transfer_id,
                 SUM(amount) OVER (PARTITION BY account_number
                                   ORDER BY confirmed_at, transfer_id) AS running
          FROM ledger_deposits) w
    WHERE d.transfer_id = w.transfer_id;

-- The two searches of the overlay, index-only. Replaces the index the sums used to scan.
CREATE INDEX ledger_deposits_running ON ledger_deposits (account_number, confirmed_at, transfer_id) INCLUDE (running);
DROP INDEX ledger_deposits_by_account;

-- A new current snapshot is announced the same way.
CREATE FUNCTION current_snapshot_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('invest_portfolio', 's' || NEW.snapshot_id);
    RETURN NULL;
END
$$;
CREATE TRIGGER current_snapshot_notify AFTER INSERT OR UPDATE ON current_snapshot
    FOR EACH ROW EXECUTE FUNCTION current_snapshot_notify();
