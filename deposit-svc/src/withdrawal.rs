//! `invest.deposit.v1.WithdrawalService`: the two phases of a withdrawal.
//!
//! Phase 1 registers the withdrawal, then asks portfolio-svc, which owns the cash, to hold
//! the amount (PortfolioLedger.HoldCash: the balance check and the hold are one atomic step
//! there, see `portfolio-svc/src/store/holds.rs`), and answers only once the hold is there.
//! A refused hold deletes the registration (nothing held, the request id free again). A hold
//! whose answer is lost leaves the registration unheld: a retry with the same request id
//! asks again (HoldCash is idempotent), and if nobody retries the expiry sweep queues a
//! release, which portfolio-svc records even for a hold it never made, so that a late
//! HoldCash holds nothing.
//!
//! Phase 2 confirms a held withdrawal (a compare-and-set written with its take in the
//! outbox) and delivers the take at once; cancellation, rejection and expiry are
//! compare-and-sets written with a release in the outbox. The outbox delivers each exactly
//! once, whatever fails (see `delivery.rs`).

use std::sync::Arc;

use invest_proto::{
    deposit::v1 as pb,
    ids::{AccountNumber, TransferId},
    signature::Signature,
    time,
};
use invest_runtime::{auth::caller, paging::page_size};
use tonic::{Code, Request, Response, Status};

use crate::{
    domain::{
        Status as State, check_amount, new_transfer_id, parse_request_id, parse_signature,
        parse_transfer_id,
    },
    error::{Error, Result},
    grpc::{AppState, filter_fingerprint, history_cursor, history_filter, history_next_page},
    store::{
        directory,
        withdrawals::{self, Confirmation, NewWithdrawal, WithdrawalRow},
    },
};

const PAGE_DEFAULT: i64 = 50;
const PAGE_MAX: i64 = 500;
/// The method page tokens of ListWithdrawals are signed for.
const LIST_WITHDRAWALS: &str = "ListWithdrawals";

fn to_wire(row: &WithdrawalRow, now: i64) -> pb::Withdrawal {
    pb::Withdrawal {
        transfer_id: row.transfer_id.clone(),
        account_number: row.account_number.clone(),
        amount: row.amount,
        status: row.effective_status(now).to_withdrawal_wire() as i32,
        created_at: Some(time::from_micros(row.created_at)),
        expires_at: Some(time::from_micros(row.expires_at)),
        confirmed_at: row.confirmed_at.map(time::from_micros),
        applied: row.applied_at.is_some(),
    }
}

/// Why the closed withdrawal `row` (of id `id`) cannot be confirmed.
fn closed(id: TransferId, row: &WithdrawalRow, now: i64) -> Error {
    match row.effective_status(now) {
        State::Rejected => Error::TransferRejected(id),
        State::Cancelled => Error::TransferCancelled(id),
        _ => Error::TransferExpired {
            id,
            at: time::rfc3339(row.expires_at),
        },
    }
}

/// `invest.deposit.v1.WithdrawalService`.
#[derive(Debug, Clone)]
pub struct WithdrawalApi {
    state: Arc<AppState>,
}

impl WithdrawalApi {
    /// Handlers over shared state.
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    /// Asks portfolio-svc to hold a registered withdrawal's amount and writes down the
    /// answer: held, or refused (the registration goes), or unknown (it stays unheld).
    async fn hold(&self, row: &WithdrawalRow, account: AccountNumber) -> Result<()> {
        let delivery = self.state.delivery()?;
        let answer = delivery
            .hold(&row.transfer_id, &row.account_number, row.amount)
            .await;
        let db = self.state.db()?;
        let id = row.transfer_id.clone();
        match answer {
            Ok(()) => {
                db.run(move |c| -> Result<()> { Ok(withdrawals::mark_held(c, &id)?) })
                    .await
            }
            // Refused, nothing held: the registration goes.
            Err(status)
                if status.code() == Code::NotFound
                    || invest_proto::status::reason(&status).as_deref()
                        == Some("INSUFFICIENT_FUNDS") =>
            {
                db.run(move |c| -> Result<()> { Ok(withdrawals::forget(c, &id)?) })
                    .await?;
                Err(match status.code() {
                    Code::NotFound => Error::AccountNotFound(account),
                    _ => {
                        metrics::counter!("withdrawals_refused_total").increment(1);
                        Error::InsufficientFunds(status.message().to_owned())
                    }
                })
            }
            Err(status) => {
                tracing::warn!(transfer_id = %row.transfer_id, code = ?status.code(), error = %status.message(), "portfolio-svc did not answer a hold");
                Err(invest_runtime::error::Error::DependencyUnavailable {
                    reason: "PORTFOLIO_UNAVAILABLE",
                    message: format!(
                        "portfolio-svc could not hold the cash ({:?}); nothing is withdrawn, and a \
                         retry with the same request_id asks again",
                        status.code()
                    ),
                }
                .into())
            }
        }
    }
}

#[tonic::async_trait]
impl pb::withdrawal_service_server::WithdrawalService for WithdrawalApi {
    async fn register_withdrawal(
        &self,
        request: Request<pb::RegisterWithdrawalRequest>,
    ) -> Result<Response<pb::RegisterWithdrawalResponse>, Status> {
        let owner = caller(&request)?.subject.clone();
        let request = request.into_inner();
        let account_number = AccountNumber::parse(&request.account_number)
            .map_err(|e| Error::invalid("INVALID_ACCOUNT_NUMBER", "account_number", e.0))?;
        if request.customer_name.is_empty() {
            return Err(Error::invalid("EMPTY_FIELD", "customer_name", "must not be empty").into());
        }
        let now = self.state.clock.now();
        let new = NewWithdrawal {
            transfer_id: new_transfer_id()?,
            owner,
            account_number,
            customer_name: request.customer_name,
            amount: check_amount(request.amount, self.state.rules.max_amount)?,
            request_id: parse_request_id(&request.request_id)?,
            created_at: now,
            expires_at: now.saturating_add(self.state.rules.transfer_ttl),
        };
        let account = new.account_number.clone();
        let db = self.state.db()?;
        let row = db
            .run(move |c| -> Result<WithdrawalRow> {
                match directory::owner_of(c, &new.account_number)? {
                    Some(holder) if holder == new.owner => {
                        if new.customer_name != holder {
                            return Err(Error::CustomerNameMismatch(new.account_number.clone()));
                        }
                        withdrawals::register(c, &new)
                    }
                    _ => Err(Error::AccountNotFound(new.account_number.clone())),
                }
            })
            .await?;
        // A retry of an earlier registration (same request id) answers with it, as the first
        // call did, whatever became of it since; only one whose hold was never answered asks
        // for the hold again.
        if row.effective_status(now) == State::Pending && !row.held {
            self.hold(&row, account).await?;
        }
        metrics::counter!("withdrawals_registered_total").increment(1);
        Ok(Response::new(pb::RegisterWithdrawalResponse {
            transfer_id: row.transfer_id,
            expires_at: Some(time::from_micros(row.expires_at)),
        }))
    }

    async fn confirm_withdrawal(
        &self,
        request: Request<pb::ConfirmWithdrawalRequest>,
    ) -> Result<Response<pb::ConfirmWithdrawalResponse>, Status> {
        let owner = caller(&request)?.subject.clone();
        let request = request.into_inner();
        let id = parse_transfer_id(&request.transfer_id)?;
        let transfer_id = id.clone();
        let signature = parse_signature(&request.signature)?;
        let now = self.state.clock.now();
        let db = self.state.db()?;
        let delivery = self.state.delivery()?;
        let rules = self.state.rules;
        let lease = delivery.lease().clone();
        let outcome = db
            .run(move |c| -> Result<Confirmation> {
                let row = withdrawals::get(c, &id, &owner)?
                    .ok_or_else(|| Error::TransferNotFound(id.clone()))?;
                let state = row.effective_status(now);
                if matches!(state, State::Expired | State::Rejected | State::Cancelled) {
                    // Writes the expiry down (and queues the release) if the sweep has not.
                    withdrawals::expire(c, now, Some(&id))?;
                    return Ok(Confirmation::Closed(row));
                }
                let expected = Signature::of(&row.account_number, &row.customer_name, row.amount);
                if !signature.matches(&expected) {
                    if state == State::Confirmed {
                        return Err(Error::SignatureMismatch {
                            what_next: "the transfer is confirmed already".into(),
                        });
                    }
                    let row =
                        withdrawals::wrong_signature(c, &id, rules.max_signature_attempts, now)?;
                    let left = rules.max_signature_attempts - row.failed_attempts;
                    return Err(Error::SignatureMismatch {
                        what_next: if left > 0 {
                            format!("{left} attempts left before the transfer is rejected")
                        } else {
                            "that was the last attempt: the transfer is now rejected and its hold released".into()
                        },
                    });
                }
                if state == State::Confirmed {
                    return Ok(Confirmation::AlreadyConfirmed(row));
                }
                if !row.held {
                    return Err(Error::NotHeld(id));
                }
                withdrawals::confirm(c, &id, now, &lease, time::now_micros())
            })
            .await?;
        let withdrawal = match outcome {
            Confirmation::Closed(row) => return Err(closed(transfer_id, &row, now).into()),
            Confirmation::AlreadyConfirmed(row) => to_wire(&row, now),
            Confirmation::Confirmed(row, outbox) => {
                metrics::counter!("withdrawals_confirmed_total").increment(1);
                let applied = delivery.deliver(&outbox).await;
                let mut withdrawal = to_wire(&row, now);
                withdrawal.applied = applied;
                withdrawal
            }
        };
        Ok(Response::new(pb::ConfirmWithdrawalResponse {
            withdrawal: Some(withdrawal),
        }))
    }

    async fn cancel_withdrawal(
        &self,
        request: Request<pb::CancelWithdrawalRequest>,
    ) -> Result<Response<pb::Withdrawal>, Status> {
        let owner = caller(&request)?.subject.clone();
        let id = parse_transfer_id(&request.get_ref().transfer_id)?;
        let transfer_id = id.clone();
        let now = self.state.clock.now();
        let db = self.state.db()?;
        let row = db
            .run(move |c| -> Result<WithdrawalRow> {
                let row = withdrawals::get(c, &id, &owner)?
                    .ok_or_else(|| Error::TransferNotFound(id.clone()))?;
                match row.effective_status(now) {
                    State::Pending => withdrawals::cancel(c, &id, now),
                    State::Cancelled => Ok(row),
                    other => Err(Error::NotCancellable {
                        id,
                        status: other.as_str(),
                    }),
                }
            })
            .await?;
        if row.status != State::Cancelled {
            // It closed in between (confirmed or expired): say so.
            return Err(Error::NotCancellable {
                id: transfer_id,
                status: row.effective_status(now).as_str(),
            }
            .into());
        }
        // The release is in the outbox; deliver it now rather than at the next round.
        let delivery = self.state.delivery()?;
        let transfer_id = row.transfer_id.clone();
        let lease = delivery.lease().clone();
        let claimed = db
            .run(move |c| {
                crate::store::outbox::claim_one(c, &transfer_id, time::now_micros(), &lease)
            })
            .await?;
        let mut answer = to_wire(&row, now);
        if let Some(outbox) = claimed {
            answer.applied = delivery.deliver(&outbox).await;
        }
        metrics::counter!("withdrawals_cancelled_total").increment(1);
        Ok(Response::new(answer))
    }

    async fn get_withdrawal(
        &self,
        request: Request<pb::GetWithdrawalRequest>,
    ) -> Result<Response<pb::Withdrawal>, Status> {
        let owner = caller(&request)?.subject.clone();
        let id = parse_transfer_id(&request.get_ref().transfer_id)?;
        let db = self.state.db()?;
        let row = db
            .run(move |c| -> Result<_> {
                withdrawals::get(c, &id, &owner)?.ok_or(Error::TransferNotFound(id))
            })
            .await?;
        Ok(Response::new(to_wire(&row, self.state.clock.now())))
    }

    async fn list_withdrawals(
        &self,
        request: Request<pb::ListWithdrawalsRequest>,
    ) -> Result<Response<pb::ListWithdrawalsResponse>, Status> {
        let owner = caller(&request)?.subject.clone();
        let request = request.into_inner();
        let filter = history_filter(
            &request.account_number,
            State::from_withdrawal_filter(request.status)?,
            &request.start_time,
            &request.end_time,
        )?;
        let limit = page_size(request.page_size, PAGE_DEFAULT, PAGE_MAX)?;
        let fingerprint = filter_fingerprint(&filter);
        let tokens = &self.state.tokens;
        let cursor = history_cursor(
            tokens,
            LIST_WITHDRAWALS,
            &owner,
            &request.page_token,
            &fingerprint,
        )?;
        let now = self.state.clock.now();
        let db = self.state.db()?;
        let listed_for = owner.clone();
        let mut rows = db
            .run(move |c| -> Result<_> {
                Ok(withdrawals::list(
                    c,
                    &listed_for,
                    &filter,
                    cursor,
                    limit + 1,
                    now,
                )?)
            })
            .await?;
        let next_page_token = history_next_page(
            tokens,
            LIST_WITHDRAWALS,
            &owner,
            &fingerprint,
            &mut rows,
            limit,
            |r| (r.created_at, &r.transfer_id),
        );
        Ok(Response::new(pb::ListWithdrawalsResponse {
            withdrawals: rows.iter().map(|r| to_wire(r, now)).collect(),
            next_page_token,
        }))
    }
}
