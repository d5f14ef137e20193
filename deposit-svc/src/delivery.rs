//! Exactly-once credit: every confirmed deposit has an outbox row, written in the
//! confirmation's transaction. The confirming call delivers it at once; whatever fails
//! (portfolio-svc down, this process killed) the background loop of any replica delivers it
//! later, with backoff and jitter, until portfolio-svc acknowledges it. ApplyDeposit is
//! idempotent on the transfer id, so a delivery repeated after a crash credits nothing twice.
//!
//! Leases and backoff run on the system clock (they are about this machine's timing, not
//! about the business time of a deposit).

use std::{sync::Arc, time::Duration};

use invest_proto::{
    auth::ServiceToken,
    portfolio::v1::{
        ApplyDepositRequest, HoldCashRequest, ReleaseHoldRequest, TakeHoldRequest,
        portfolio_ledger_client::PortfolioLedgerClient,
    },
    time,
};
use invest_runtime::{db::Database, telemetry::trace};
use rand::Rng as _;
use tonic::{service::interceptor::InterceptedService, transport::Channel};
use tracing::Instrument as _;

use crate::store::outbox::{self, Lease, OutboxRow, kind};

/// How deposit-svc calls `PortfolioLedger`: with its service token and the trace context.
pub type LedgerClient =
    PortfolioLedgerClient<InterceptedService<Channel, trace::Propagate<ServiceToken>>>;

/// `rpc.service` of the calls to portfolio-svc.
const LEDGER: &str = "invest.portfolio.v1.PortfolioLedger";

/// Rows claimed per round of the background loop.
const CLAIM_BATCH: i64 = 64;

/// Settings of delivery.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Deadline of one ApplyDeposit call.
    pub timeout: Duration,
    /// How long a claim holds; longer than `timeout`.
    pub lease: Duration,
    /// Longest wait between two attempts of one row.
    pub max_backoff: Duration,
    /// How often the background loop looks for due rows.
    pub poll: Duration,
}

/// Delivers outbox rows to `PortfolioLedger` (ApplyDeposit, TakeHold, ReleaseHold), and asks
/// it for withdrawals' holds.
#[derive(Debug)]
pub struct Delivery {
    db: Database,
    ledger: LedgerClient,
    lease: Lease,
    config: DeliveryConfig,
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Delivery {
    /// A deliverer for this process; `lease_owner` must be unique per process start.
    pub fn new(
        db: Database,
        ledger: LedgerClient,
        lease_owner: String,
        config: DeliveryConfig,
    ) -> Self {
        Self {
            db,
            ledger,
            lease: Lease {
                owner: lease_owner,
                micros: micros(config.lease),
            },
            config,
        }
    }

    /// The lease new outbox rows are written with (the confirming replica delivers them).
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Delivers one row this process holds the lease of. True when portfolio-svc has the
    /// credit and it is recorded here. Traced as one delivery attempt (a child of the current
    /// span: the confirmation, or the background loop's redelivery).
    pub async fn deliver(&self, row: &OutboxRow) -> bool {
        let span = if trace::enabled() {
            tracing::info_span!(
                "delivery",
                otel.name = format!("deliver {}", row.kind),
                transfer_id = %row.transfer_id,
                kind = %row.kind,
                attempt = row.attempts + 1,
            )
        } else {
            tracing::Span::none()
        };
        self.attempt(row).instrument(span).await
    }

    async fn attempt(&self, row: &OutboxRow) -> bool {
        let mut ledger = self.ledger.clone();
        let confirmed_at = Some(time::from_micros(row.confirmed_at));
        let (transfer_id, account_number) = (row.transfer_id.clone(), row.account_number.clone());
        let method = match row.kind.as_str() {
            kind::TAKE => "TakeHold",
            kind::RELEASE => "ReleaseHold",
            _ => "ApplyDeposit",
        };
        let span = trace::client_span(LEDGER, method);
        let call = async move {
            // `Ok(true)`: it had been done before.
            match row.kind.as_str() {
                kind::TAKE => ledger
                    .take_hold(TakeHoldRequest {
                        transfer_id,
                        account_number,
                        amount: row.amount,
                        confirmed_at,
                    })
                    .await
                    .map(|r| r.into_inner().already_taken),
                kind::RELEASE => ledger
                    .release_hold(ReleaseHoldRequest {
                        transfer_id,
                        account_number,
                        amount: row.amount,
                    })
                    .await
                    .map(|r| r.into_inner().already_released),
                _ => ledger
                    .apply_deposit(ApplyDepositRequest {
                        transfer_id,
                        account_number,
                        amount: row.amount,
                        confirmed_at,
                    })
                    .await
                    .map(|r| r.into_inner().already_applied),
            }
        };
        let call = traced_call(span, call);
        let outcome = tokio::time::timeout(self.config.timeout, call).await;
        let error = match outcome {
            Ok(Ok(already)) => {
                let transfer_id = row.transfer_id.clone();
                let now = time::now_micros();
                match self
                    .db
                    .run(move |c| outbox::delivered(c, &transfer_id, now))
                    .await
                {
                    Ok(()) => {
                        let result = if already {
                            "already_applied"
                        } else {
                            "applied"
                        };
                        metrics::counter!("deposit_deliveries_total", "kind" => row.kind.clone(), "result" => result)
                            .increment(1);
                        tracing::info!(transfer_id = %row.transfer_id, kind = %row.kind, result, "delivered to portfolio-svc");
                        return true;
                    }
                    // Credited, but not recorded: the lease lapses and a later attempt finds it
                    // already applied.
                    Err(e) => format!("credited, but recording it failed: {e}"),
                }
            }
            Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
            Err(_) => format!("no answer within {:?}", self.config.timeout),
        };
        metrics::counter!("deposit_deliveries_total", "kind" => row.kind.clone(), "result" => "failed").increment(1);
        let next = time::now_micros() + self.backoff(row.attempts);
        tracing::warn!(transfer_id = %row.transfer_id, kind = %row.kind, attempts = row.attempts + 1, error = %error, retry_at = %time::rfc3339(next), "not delivered to portfolio-svc yet; will retry");
        let (transfer_id, lease) = (row.transfer_id.clone(), self.lease.clone());
        if let Err(e) = self
            .db
            .run(move |c| outbox::failed(c, &transfer_id, &lease, &error, next))
            .await
        {
            tracing::warn!(error = %e, "cannot record the failed delivery; the lease will lapse and it will be retried");
        }
        false
    }

    /// Phase 1 of a withdrawal: asks portfolio-svc to hold the amount (HoldCash), within the
    /// delivery timeout. Its status as portfolio-svc answered it, or DEADLINE_EXCEEDED.
    pub async fn hold(
        &self,
        transfer_id: &str,
        account_number: &str,
        amount: i64,
    ) -> Result<(), tonic::Status> {
        let mut ledger = self.ledger.clone();
        let request = HoldCashRequest {
            transfer_id: transfer_id.to_owned(),
            account_number: account_number.to_owned(),
            amount,
        };
        let call = traced_call(trace::client_span(LEDGER, "HoldCash"), async move {
            ledger.hold_cash(request).await
        });
        match tokio::time::timeout(self.config.timeout, call).await {
            Ok(answer) => answer.map(|_| ()),
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "no answer within {:?}",
                self.config.timeout
            ))),
        }
    }

    /// Exponential backoff from one second to `max_backoff`, with full jitter over its
    /// upper half, so that replicas and rows do not retry in lockstep.
    fn backoff(&self, attempts: i64) -> i64 {
        let exponent = u32::try_from(attempts.clamp(0, 30)).unwrap_or(30);
        let ceiling = 1_000_000i64
            .saturating_mul(1i64 << exponent)
            .min(micros(self.config.max_backoff))
            .max(1);
        rand::rng().random_range(ceiling / 2..=ceiling)
    }

    /// Delivers due rows forever.
    pub async fn run(self: Arc<Self>) {
        loop {
            let now = time::now_micros();
            let lease = self.lease.clone();
            match self
                .db
                .run(move |c| outbox::claim_due(c, now, &lease, CLAIM_BATCH))
                .await
            {
                Ok(rows) => {
                    for row in &rows {
                        // A trace of its own, linked to the confirmation's.
                        let span = if trace::enabled() {
                            tracing::info_span!(parent: None, "redelivery", transfer_id = %row.transfer_id)
                        } else {
                            tracing::Span::none()
                        };
                        trace::link(&span, row.traceparent.as_deref());
                        self.deliver(row).instrument(span).await;
                    }
                    if rows.len() as i64 == CLAIM_BATCH {
                        continue;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot claim deposits to deliver"),
            }
            tokio::time::sleep(self.config.poll).await;
        }
    }
}

/// Runs a call to portfolio-svc inside its client span and records its outcome there.
async fn traced_call<T>(
    span: tracing::Span,
    call: impl Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    let outcome = call.instrument(span.clone()).await;
    let code = match &outcome {
        Ok(_) => 0,
        Err(status) => status.code() as i32,
    };
    trace::record_status(&span, code, false);
    outcome
}
